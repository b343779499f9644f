"""`synid attributes validate`: check an attribute spec dir in FLUXSynID's layout."""

from __future__ import annotations

import argparse
import sys


def run_validate(directory: str) -> int:
    from synid_assets.core.spec.loading import load_attribute_spec
    from synid_assets.core.spec.model import AttributeSpecError

    try:
        spec = load_attribute_spec(directory)
    except AttributeSpecError as exc:
        print(f"{directory}: invalid attribute spec\n{exc}", file=sys.stderr)
        return 1
    for note in spec.notes:
        print(f"note: {note}")
    for warning in spec.warnings:
        print(f"warning: {warning}")
    print(f"{directory}: valid, {len(spec.classes)} classes, {len(spec.clashes)} clash rules")
    for cls in spec.classes:
        print(f"  {cls.name:<14} used with p={cls.usage_probability:<6g} {len(cls.values)} values")
    print(f"fingerprint {spec.fingerprint}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    attributes = commands.add_parser("attributes", help="attribute spec tools")
    attribute_commands = attributes.add_subparsers(dest="attributes_command", required=True)
    validate = attribute_commands.add_parser("validate", help="validate an attribute spec dir")
    validate.add_argument("directory")
    validate.set_defaults(handler=lambda args: run_validate(args.directory))
