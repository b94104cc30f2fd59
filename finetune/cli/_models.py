"""``finetune backbones`` and ``finetune inspect``: what networks exist and what is inside one."""

from __future__ import annotations

import logging

from ._options import add_alias, add_shared

log = logging.getLogger("finetune")


def register(subparsers) -> None:
    """Add the ``backbones`` and ``inspect`` subcommands."""
    p = subparsers.add_parser("backbones", help="list the backbones of the zoo (input size, features)",
                              description="List the registered backbones with their input size, the number "
                                          "of features a new head receives, parameters and where their "
                                          "ImageNet weights come from.")
    p.add_argument("--family", default=None, help="only this family, e.g. resnet, vgg, efficientnet_lite")
    add_alias(p, "--names", p.add_argument("--names-only", action="store_true",
                                           help="names only (fast: builds nothing)"), kind="store_true")
    p.set_defaults(handler=backbones)

    p = subparsers.add_parser("inspect", help="show the layers, parameters and preprocessing of a model",
                              description="Show a model directory's or a zoo backbone's layers (with output "
                                          "shapes at the native input size), parameter count, classifier, "
                                          "default feature layer and preprocessing. Zoo names are built "
                                          "as finetune.create_model builds them: with their ImageNet "
                                          "weights unless --weights says otherwise (--weights none: random, "
                                          "nothing to download).")
    p.add_argument("model", metavar="MODEL_OR_NAME", help="a model directory or a zoo backbone name")
    p.add_argument("--no-layers", action="store_true", help="summary only")
    add_shared(p, "weights")
    p.set_defaults(handler=inspect)


def backbones(args) -> int:
    from .._progress import progress_bar
    from ..models.zoo import describe, list_backbones

    names = list_backbones(args.family)
    if args.names_only:
        print("\n".join(names))
        return 0
    rows = [describe(n) for n in progress_bar(names, desc="backbones", unit="net")]
    header = f"{'name':22s} {'input':>9s} {'any size':>8s} {'features':>8s} {'params':>8s}  imagenet weights"
    print(header)
    print("-" * len(header))
    for r in rows:
        size = "x".join(map(str, r["input_size"]))
        weights = {"offline": "offline (packaged)", "download": "gluoncv download", None: "none"}[r["imagenet"]]
        print(f"{r['name']:22s} {size:>9s} {'yes' if r['flexible_size'] else 'no':>8s} "
              f"{r['num_features']:8d} {r['num_parameters'] / 1e6:7.1f}M  {weights}")
    return 0


def inspect(args) -> int:
    from ..models import create_model, graph, require_model

    model = require_model(create_model(args.model, weights=args.weights), "full", "inspect")
    pre = model.preprocess
    symbol = model.to_symbol()
    shape = (1, pre.channels, *pre.size)
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(data=shape)
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    ops = graph.layer_ops(symbol)
    layers = model.layer_names
    print(f"{type(model).__name__}: {model.arch or ''}")
    print(f"  parameters     {model.num_parameters:,}")
    print(f"  layers         {len(layers)}")
    print(f"  classifier     {model.classifier}")
    print(f"  feature layer  {model.feature_layer} ({model.num_features} features)")
    names = model.class_names
    print(f"  classes        {'-' if names is None else f'{len(names)}: ' + ', '.join(names[:5])}"
          f"{' ...' if names and len(names) > 5 else ''}")
    print(f"  preprocess     {pre!r}")
    print(f"                 {pre.color}, y = (x - mean) / std * scale, x in 0-255; resize {pre.resize} "
          f"({pre.resize_mode}), centre crop {pre.size[0]}x{pre.size[1]}")
    if not args.no_layers:
        print()
        print(f"  {'layer':48s} {'op':18s} output at {shape[2]}x{shape[3]}")
        for layer in layers:
            out = shapes.get(f"{layer}_output", shapes.get(layer))
            text = "?" if not out else "x".join(map(str, out[1:]))
            print(f"  {layer:48s} {ops.get(layer, '?'):18s} {text}")
    return 0
