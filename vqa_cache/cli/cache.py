"""`vqa-cache cache ls | info | verify | rm`: the cache's entries, through the API's functions (api/entries.py,
which import the library lazily: h5py and pyarrow are slow to load, and `vqa-cache --help` should answer at once)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..api import entries
from .shared import human_bytes


@click.group()
def cache():
    """List, inspect, verify and remove cache entries."""


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: key, kind, spec, rows, bytes, complete.")
@click.pass_obj
def cache_ls(obj, as_json):
    """List cache entries."""
    rows = [{k: v for k, v in row.items() if k != "error"} for row in entries.cache_ls(cache_dir=obj.root)]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo(f"no entries in {obj.root}")
    for row in rows:
        spec = row["spec"]
        weights = str(spec.get("weights", ""))
        what = f"{Path(str(spec.get('encoder', '?'))).name} {weights[:24] + '...' if len(weights) > 27 else weights}"
        if row["kind"] == "image":
            what += f" {spec.get('size', '')}px {'+'.join(spec.get('outputs', []))}"
        if row["kind"] == "dataset":
            what = f"{spec.get('identity', {}).get('kind', '?')} samples table"
        state = "complete" if row["complete"] else "INCOMPLETE"
        click.echo(f"{row['key']:<24} {row['rows']:>8} rows {row['bytes'] / 2**20:>9.1f} MiB  {state:<10} {what}")


@cache.command("info")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@click.pass_obj
def cache_info(obj, key, as_json):
    """Spec, rows, size, timings and shards of one entry (KEY or a unique prefix)."""
    record = entries.cache_info(key, cache_dir=obj.root)
    if as_json:
        click.echo(json.dumps(record, indent=1))
        return
    click.echo(
        f"{record['key']}  ({record['kind']} features, {'complete' if record['complete'] else 'INCOMPLETE'})\n"
        f"  path     {record['path']}\n"
        f"  rows     {record['rows']} (dim {record['dim']}; {len(record['skipped'])} skipped)\n"
        f"  size     {human_bytes(record['bytes'])}\n"
        f"  created  {record['created']} by vqa-cache {record['tool_version']}, format {record['format']}\n"
        f"  timings  {json.dumps(record['timings'])}\n  spec"
    )
    for k, v in sorted(record["spec"].items()):
        click.echo(f"    {k:<12} {json.dumps(v)}")
    click.echo(f"  shards   {len(record['shards'])}")
    for shard in record["shards"]:
        click.echo(
            f"    {shard['file']:<22} rows {shard['start']}..{shard['stop']} ({shard['rows']})  "
            f"{human_bytes(shard['bytes'] or 0):>10}  sha256 {str(shard['sha256'])[:16]}"
        )


@cache.command("verify")
@click.argument("key")
@click.pass_obj
def cache_verify(obj, key):
    """Check checksums, row counts and that every id of the dataset is present; exit 1 if bad."""
    summary = entries.cache_verify(key, cache_dir=obj.root)
    problems = summary["problems"]
    if problems:
        click.echo(f"BAD {summary['key']}: {problems[0]}", err=True)
        for p in problems[1:]:
            click.echo(f"    also: {p}", err=True)
        sys.exit(1)
    click.echo(
        f"ok {summary['key']}: {summary['shards']} shards, {summary['rows']} rows"
        + (f" (+{summary['skipped']} skipped)" if summary["skipped"] else "")
        + f", {human_bytes(summary['bytes'])}; checksums, row counts and ids all match"
    )


@cache.command("rm")
@click.argument("key")
@click.pass_obj
def cache_rm(obj, key):
    """Delete one entry (KEY or a unique prefix)."""
    removed = entries.cache_rm(key, cache_dir=obj.root)
    click.echo(f"removed {removed['key']} ({human_bytes(removed['bytes'])})")
