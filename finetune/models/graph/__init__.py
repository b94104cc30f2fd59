"""Graph surgery on MXNet symbols, the one mechanism behind features, cutting, BatchNorm freezing,
gradients at a layer, export and Grad-CAM.

Inside: ``_symbols`` (layers, cutting, BatchNorm flags, renaming of symbols), ``_probe`` (probes,
splitting), ``_blocks`` (BatchNorm modes of Gluon blocks) and ``_fold`` (a graph folded for one
input size); see :mod:`finetune.models.graph` in the API reference for how layer names are formed.
"""

from ._symbols import (batchnorm_global_stats, batchnorm_layers, cut, data_var, find_classifier, infer_shape,
                       layer_ops, layer_output, list_layers, rename_inputs, set_batchnorm_global_stats, strip_prefix,
                       strip_softmax)
from ._blocks import batchnorm_modes, fully_connected_params, gluon_to_graph, set_block_batchnorm_global_stats
from ._fold import fold_padding, has_shape_tricks, merge_padding
from ._probe import CUT_INPUT, insert_probe, probe_block, split_at

__all__ = [
    "CUT_INPUT",
    "batchnorm_global_stats",
    "batchnorm_layers",
    "batchnorm_modes",
    "cut",
    "data_var",
    "find_classifier",
    "fold_padding",
    "fully_connected_params",
    "gluon_to_graph",
    "has_shape_tricks",
    "infer_shape",
    "insert_probe",
    "layer_ops",
    "layer_output",
    "list_layers",
    "merge_padding",
    "probe_block",
    "rename_inputs",
    "set_batchnorm_global_stats",
    "set_block_batchnorm_global_stats",
    "split_at",
    "strip_prefix",
    "strip_softmax",
]
