"""The `synid` command. One module per command group; each adds its parsers with `register`."""

from __future__ import annotations

import argparse

from synid_assets.cli import (
    attributes,
    demo,
    evaluate,
    export,
    filter_vectors,
    models,
    query,
    regenerate,
    thresholds,
    train,
    vectors,
)

COMMAND_GROUPS = (demo, query, attributes, thresholds, filter_vectors, models, regenerate)
COMMAND_GROUPS += (train, evaluate)
COMMAND_GROUPS += (export,)
COMMAND_GROUPS += (vectors,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synid", description="SynID: synthetic face-recognition datasets")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
