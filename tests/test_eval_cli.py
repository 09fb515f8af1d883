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
  assert args.corpora is None and cli.DEFAULT_CORPORA == ("ptb", "wikipedia")
  assert "NVFP4 W4A4" in args.recipes and "FP8 KV" in args.recipes
  assert cli._budgets(args.budget) == {"ppl": "0.02", "kl": "0.05"}
  with pytest.raises(argparse.ArgumentTypeError):
    cli._budgets(["ppl"])


def test_default_corpora_leave_out_one_that_cannot_be_fetched(monkeypatch, capsys):
  # The defaults drop a corpus whose source the registry cannot fetch, with a note for the
  # report; a corpus the user named ends the run instead, and so does having none left.
  from experiments.data import corpora
  from experiments.data.registry import FetchError

  def gone(*_):
    raise FetchError("bigbench: `pip download ... bigbench==1.0.0` failed (exit 1):\n"
                     "ERROR: No matching distribution found for bigbench==1.0.0\nIs PyPI ...?")

  monkeypatch.setattr(corpora, "ptb_text", lambda split: "the ptb text " * 100)
  monkeypatch.setattr(corpora, "wikipedia_text", gone)
  texts, notes = cli._corpora(cli.DEFAULT_CORPORA, 64, required=False)
  assert list(texts) == ["ptb/test"] and len(texts["ptb/test"][0]) == 64 * 8
  assert len(notes) == 1 and notes[0].startswith("corpus wikipedia left out")
  assert "(ERROR: No matching distribution found for bigbench==1.0.0)" in notes[0]
  assert "left out" in capsys.readouterr().err
  with pytest.raises(FetchError):
    cli._corpora(["ptb", "wikipedia"], 64)
  monkeypatch.setattr(corpora, "ptb_text", gone)
  with pytest.raises(SystemExit, match="no corpus could be fetched"):
    cli._corpora(cli.DEFAULT_CORPORA, 64, required=False)


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
