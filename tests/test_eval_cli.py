"""The gate / ladder / plan subcommands parse and run (plan and a synthetic ladder)."""

import argparse

import pytest

from mxjax.eval import cli


def _parser():
  ap = argparse.ArgumentParser(prog="mxjax")
  sub = ap.add_subparsers(dest="command", required=True)
  cli.add_gate_parser(sub)
  cli.add_ladder_parser(sub)
  cli.add_plan_parser(sub)
  return ap


def test_gate_defaults_and_budgets():
  args = _parser().parse_args(["gate", "--budget", "ppl=0.02", "kl=0.05"])
  assert args.func is cli.cmd_gate
  assert args.model == "smollm2-135m-instruct" and args.preset == "quick"
  assert args.corpora == ["ptb", "wikipedia"]
  assert "NVFP4 W4A4" in args.recipes and "FP8 KV" in args.recipes
  assert cli._budgets(args.budget) == {"ppl": "0.02", "kl": "0.05"}
  with pytest.raises(argparse.ArgumentTypeError):
    cli._budgets(["ppl"])


def test_plan_command_prints_rows_and_sources(capsys):
  args = _parser().parse_args(["plan", "--model", "llama-3.1-8b", "--recipes", "NVFP4 W4A4",
                               "--accelerators", "H100", "B200", "--context", "4096"])
  assert args.func(args) == 0
  out = capsys.readouterr().out
  assert out.count("| llama-3.1-8b | NVFP4 W4A4 |") == 2
  assert "no fp4 matrix units" in out and "HGX B200 datasheet" in out


def test_ladder_synthetic(capsys, tmp_path):
  args = _parser().parse_args(["ladder", "--synthetic", "--schemes", "mxfp8_e4m3", "mxfp4",
                               "--out", str(tmp_path)])
  assert args.func(args) == 0
  out = capsys.readouterr().out
  assert "| gaussian | mxfp4 |" in out and "NVIDIA (published" in out
  assert (tmp_path / "ladder.md").exists() and (tmp_path / "ladder.json").exists()
