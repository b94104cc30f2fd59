"""On-disk formats of finetune.models: the model directory, deployment folders, ONNX, PyTorch and Caffe files.

Private plumbing of :mod:`finetune.models` (hence ``_io``): the model, backbone,
quantization and export code of this package read and write through these
modules, and nothing outside it does. What users call is public in
:mod:`finetune.models` (``save`` / :func:`~finetune.load_model`,
:func:`~finetune.models.export_for_deployment`, :func:`~finetune.models.load_deployment`,
:class:`~finetune.models.Deployment`) and :mod:`finetune.models.zoo`
(:func:`~finetune.models.zoo.read_torch_state_dict`).

- ``_modeldir``: the model directory (``config.json``, ``symbol.json``,
  ``weights.params``, the preprocessing) written atomically and read consistently;
- ``_checkpoint``: MXNet symbolic checkpoints (``prefix-symbol.json`` + ``prefix-0000.params``);
- ``_caffe``: a Caffe pair (converted by :mod:`finetune.models.caffe`) read as a backbone;
- ``_deployment``, ``_export``, ``_onnx``: deployment folders and their ONNX file;
- ``_torch_pickle``, ``_torch_unpickler``: PyTorch state dicts read without torch or running pickled code;
- ``_paths``: file names from a file's contents kept inside their folder.
"""
