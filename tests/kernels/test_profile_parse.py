"""The ncu profile driver's parsing (the profile itself needs the GPU machine)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))

import profile_kernels as P  # noqa: E402

NCU_OUT = '''==PROF== Connected to process 123
==PROF== Profiling "kernel_mosaic_gpu_kernel": 0%....50%....100% - 9 passes
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","123","python3","127.0.0.1","kernel_mosaic_gpu_kernel","1","7","(384, 1, 1)","(132, 1, 1)","0","9.0","GPU Speed Of Light Throughput","DRAM Throughput","%","61.20"
"0","123","python3","127.0.0.1","kernel_mosaic_gpu_kernel","1","7","(384, 1, 1)","(132, 1, 1)","0","9.0","Launch Statistics","Registers Per Thread","register/thread","168"
'''


def test_parse_details_reads_metrics_after_the_preamble():
  rows = P.parse_details(NCU_OUT)
  assert [(r["section"], r["metric"], r["value"]) for r in rows] == [
      ("GPU Speed Of Light Throughput", "DRAM Throughput", "61.20"),
      ("Launch Statistics", "Registers Per Thread", "168")]
  md = P.to_markdown("wo_int4_m1", rows)
  assert "| GPU Speed Of Light Throughput | DRAM Throughput | 61.20 | % |" in md
  assert "kernel_mosaic_gpu_kernel" in md


def test_parse_details_without_metrics_is_empty():
  assert P.parse_details("==ERROR== ncu failed\n") == []


SASS_OUT = '''==PROF== Connected to process 123
"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)","Instructions Executed","Thread Instructions Executed"
"7f00","LDS.128 R4, [R2]","10","8","1,000","32,000"
"7f10","@P0 HMUL2.BF16_V2 R4, R4, R6","4","1","3,000","96,000"
"7f20","HMUL2 R5, R5, R7","2","0","1,000","32,000"
"7f30","EXIT","0","0","0","0"
'''


def test_opcode_table_groups_sass_by_mnemonic():
  table, lines = P.opcode_table(SASS_OUT)
  assert lines == 4
  assert table[0] == ("HMUL2", 4000.0, 6.0)
  assert ("LDS", 1000.0, 10.0) in table
  assert P.opcode_table("no table here") == ([], 0)


def test_stall_table_ranks_instructions_by_stall_samples():
  md = P.stall_table(SASS_OUT, top=2)
  assert md[2] == "| `LDS.128 R4, [R2]` | 62.5% | 50.0% | 1,000 |"
  assert md[3] == "| `@P0 HMUL2.BF16_V2 R4, R4, R6` | 25.0% | 6.2% | 3,000 |"
  assert len(md) == 4


def test_longest_launch_keeps_the_slowest_of_several():
  head = NCU_OUT.splitlines()[2]
  row = ('"{id}","123","python3","127.0.0.1","{name}","1","7","(128, 1, 1)","(132, 1, 1)","0",'
         '"9.0","GPU Speed Of Light Throughput","{metric}","{unit}","{value}"')
  text = "\n".join([head,
                    row.format(id=0, name="gemv", metric="Duration", unit="ns", value="104,700"),
                    row.format(id=0, name="gemv", metric="DRAM Throughput", unit="%", value="92"),
                    row.format(id=1, name="loop_reduce_fusion", metric="Duration", unit="ns",
                               value="3,200"),
                    row.format(id=1, name="loop_reduce_fusion", metric="DRAM Throughput",
                               unit="%", value="1.5")])
  rows = P.longest_launch(P.parse_details(text))
  assert {r["kernel"] for r in rows} == {"gemv"}
  assert [r["value"] for r in rows] == ["104,700", "92"]


def test_longest_launch_leaves_one_launch_alone():
  rows = P.parse_details(NCU_OUT)
  assert P.longest_launch(rows) == rows
