"""The pure helpers of tools/benchmark.py (padding, ratios, the table) and tools/rl_packing.py's replay."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools'))

import benchmark  # noqa: E402


def test_padding_fraction_counts_empty_slots():
  # 2 rows of 4 + 4 slots: 3 + 4 and 1 + 2 real tokens -> 10 of 16 slots used.
  assert benchmark.padding_fraction([3, 1], [4, 2], max_prompt_len=4, max_new_tokens=4) == pytest.approx(6 / 16)
  assert benchmark.padding_fraction([4, 4], [4, 4], 4, 4) == 0.0
  with pytest.raises(ValueError, match='prompt lengths'):
    benchmark.padding_fraction([1, 2], [3], 4, 4)


def test_ratio_is_none_without_both_measurements():
  assert benchmark.ratio({'tokens_per_s': 30.0}, {'tokens_per_s': 20.0}, 'tokens_per_s') == 1.5
  assert benchmark.ratio({'tokens_per_s': 30.0}, {'error': 'ImportError: x'}, 'tokens_per_s') is None
  assert benchmark.ratio({'tokens_per_s': 30.0}, {'tokens_per_s': 0.0}, 'tokens_per_s') is None


def _report():
  return {
      'meta': {'rounds': 2, 'cores': 2, 'peak_gflops': 50.0},
      'train': [{'shape': 'tiny', 'batch': 16, 'seq_len': 256,
                 'ours': {'tokens_per_s': 2000.0, 'mfu_percent': 10.0},
                 'transformers': {'tokens_per_s': 1000.0, 'mfu_percent': 5.0}}],
      'decode': [{'shape': 'tiny', 'batch': 1, 'ours': {'tokens_per_s': 300.0, 'kernels_per_token': 154},
                  'transformers': {'tokens_per_s': 100.0},
                  'tunix': {'error': 'RuntimeError: no | pipes\nplease'}}],
      'rl': {'rows': 32, 'max_prompt_len': 64, 'max_new_tokens': 128, 'note': 'n',
             'seconds_median': {'sampling': 2.0, 'judging': 1.0, 'update': 1.0}, 'padding_fraction': 0.3},
  }


def test_markdown_table_has_ratios_targets_and_errors():
  text = benchmark.markdown(_report())
  lines = [line for line in text.splitlines() if line.startswith('| ')]
  assert lines[0].startswith('| part | shape |')
  assert all(line.count('|') == len(benchmark.HEADER) + 1 for line in lines)  # no cell breaks the table
  assert '| train | tiny 16x256 | tokens/s | 2,000 | transformers | 1,000 | 2.00x | >= 1.0x | yes |' in lines
  tunix = next(line for line in lines if '| tunix |' in line)
  assert 'error: RuntimeError: no / pipes please' in tunix and '>= 1.5x' in tunix
  assert '| decode | tiny batch 1 | tokens/s | 300 | transformers | 100 | 3.00x | — | — |' in lines
  assert '| decode | tiny batch 1 | kernels per token | 154 |  |  |  |  |  |' in lines
  assert any('sampling s | 2.00 (50%)' in line for line in lines)
  assert any('update padding (padded) | 30.0% |' in line and line.endswith('<= 25% | no |') for line in lines)
  packed = _report()
  packed['rl'].update(packed=True, padding_fraction=0.1, unpacked_padding_fraction=0.45)
  lines = benchmark.markdown(packed).splitlines()
  assert any('update padding (packed) | 10.0% | padded rows | 45.0% |' in line and line.endswith('<= 25% | yes |')
             for line in lines)


def test_write_outputs(tmp_path):
  benchmark.write_outputs(str(tmp_path / 'out'), _report())
  assert json.loads((tmp_path / 'out' / 'benchmark.json').read_text())['rl']['rows'] == 32
  assert (tmp_path / 'out' / 'benchmark.md').read_text() == benchmark.markdown(_report())


def test_the_packing_replay_reads_a_policys_answers_and_compares_bucket_counts(tmp_path, capsys):
  import rl_packing as tool
  samples = tmp_path / 'samples.jsonl'
  rows = [{'prompt': f'question {i}?', 'cot': 'Ordinary.', 'answer': 'No.', 'expected': label}
          for i, label in enumerate(['refuse', 'comply'] * 4)]
  rows += [{'arm': 'memorisation baseline', 'prompt': 'q', 'cot': '', 'answer': 'x', 'expected': 'refuse'},
           {'arm': 'model', 'prompt': 'unlabelled', 'cot': None, 'answer': 'x', 'expected': None}]
  samples.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  # Short rollouts fill 3 of a minibatch's 16 rows: halves round that up to 8, eighths to 4.
  assert tool.main(['--samples', str(samples), '--tokenizer', 'default', '--steps', '4', '--buckets', '2,8',
                    '--row_rollouts', '1,2', '--max_new_tokens', '96', '--max_prompt_len', '32']) == 0
  out = capsys.readouterr().out
  assert 'skipped: 1 (arm memorisation baseline), 1 (no label)' in out
  table = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split('|')[1:-1]] for line in out.splitlines()
                                             if line.startswith('| p'))}
  long_rows = 'packed, 8 buckets, rows of 2 x 128'
  assert set(table) == {'padded', 'packed, 2 buckets', 'packed, 8 buckets', 'packed, 2 buckets, rows of 2 x 128',
                        long_rows}
  pad = {k: float(v[0].rstrip('%')) for k, v in table.items()}
  assert pad[long_rows] == pad['packed, 8 buckets'] < pad['packed, 2 buckets'] < pad['padded']  # same slots
  rows_mean = {k: float(v[3]) for k, v in table.items()}
  assert {k: rows_mean[k] for k in ('padded', 'packed, 2 buckets', 'packed, 8 buckets')} == {
      'padded': 32.0, 'packed, 2 buckets': 16.0, 'packed, 8 buckets': 8.0}
  # Rows twice as long: the 8 minibatch rows of 128 slots become at most 4 of 256, in eighths of those.
  assert rows_mean[long_rows] == 4.0 and table[long_rows][4] == '1,024'
  with pytest.raises(SystemExit):
    tool.parse_args(['--samples', str(samples), '--row_rollouts', '0'])
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"prompt": "x"}\n')
  with pytest.raises(SystemExit, match='bad.jsonl:1'):
    tool.main(['--samples', str(bad), '--tokenizer', 'default'])
  with pytest.raises(SystemExit):  # not in a run's samples/ folder: the flag is named
    tool.main(['--samples', str(samples)])
  assert 'give --tokenizer' in capsys.readouterr().err
