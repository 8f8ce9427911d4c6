"""tools/aot_compile.py: the trainers' real programs compiled for a TPU topology on this CPU.

Needs libtpu (requirements-tpu.txt, which CI installs); skipped with the reason otherwise.
Each case runs the tool as a user does, in its own process: compiling for a TPU loads libtpu,
which the test process (8 fake CPU devices) should not.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, 'tools', 'aot_compile.py')

sys.path.insert(0, os.path.join(REPO, 'tools'))
import aot_compile  # noqa: E402

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                  reason='libtpu is not installed (pip install -r requirements-tpu.txt)')


def _run(tmp_path, *args):
  out = tmp_path / 'report.json'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run([sys.executable, TOOL, '--json', str(out), *args], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=600)
  return proc, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.slow
@needs_libtpu
def test_sft_step_compiles_for_v5e_and_fits(tmp_path):
  proc, r = _run(tmp_path, '--config', 'configs/sft.py', '--topology', 'v5e:2x2',
                 '--config.mesh.data=1', '--config.mesh.fsdp=-1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert r['chips'] == 4 and r['mesh'] == {'data': 1, 'fsdp': 4, 'tensor': 1}
  assert 'v5 lite' in r['device_kind'].lower()
  (step,) = r['programs']
  assert step['name'] == 'train_step' and step['flops'] > 0 and step['total_bytes'] > 0
  # Step times come from model FLOPs at the chip's bf16 peak (v5e: 197 TFLOP/s).
  assert step['model_flops'] > 0
  assert step['seconds_at_40_mfu'] == pytest.approx(step['model_flops'] / (0.4 * 197e12))
  # The state is donated: its outputs alias its arguments.
  assert step['alias_bytes'] >= r['resident']['train state'] > 0
  assert r['fits'] and r['excess_bytes'] == 0 and r['peak_bytes_per_chip'] < r['hbm_per_chip_bytes']
  assert '| train_step |' in proc.stdout and '-> fits' in proc.stdout
  assert step['pallas_kernels'] == 0  # model.attention='xla': XLA ops only


@pytest.mark.slow
@needs_libtpu
def test_splash_attention_compiles_for_v5p_as_pallas_kernels(tmp_path):
  proc, r = _run(tmp_path, '--config', 'configs/sft.py', '--topology', 'v5p:2x2x1', '--config.model.attention=splash',
                 '--config.model.attention_block=128', '--config.data.seq_len=256')
  assert proc.returncode == 0, proc.stderr[-3000:]
  (step,) = r['programs']
  # The tiny preset's 4 unrolled layers, each splash's forward, dQ and dKV kernels.
  assert step['pallas_kernels'] == 3 * r['model']['n_layers'] == 12
  assert r['fits'] and 'attention splash (block 128)' in proc.stdout


@pytest.mark.slow
@needs_libtpu
def test_a_batch_too_large_does_not_fit_and_says_by_how_much(tmp_path):
  # 512 x 2,048 tokens of float32 [B, L, 4,096] logits: ~16 GiB per chip of a 16 GiB v5e.
  proc, r = _run(tmp_path, '--config', 'configs/sft.py', '--topology', 'v5e:2x2', '--config.mesh.data=1',
                 '--config.mesh.fsdp=-1', '--config.batch_size=512', '--config.data.seq_len=2048')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not r['fits'] and r['excess_bytes'] == r['peak_bytes_per_chip'] - r['hbm_per_chip_bytes'] > 0
  assert 'RESOURCE_EXHAUSTED' in r['programs'][0]['error'] and 'does NOT fit' in proc.stdout
  # Then says what would fit, compiled: the mesh is FSDP already, so full remat, then smaller batches
  # until one fits (the search stops there), each with the peak it reaches.
  tried = r['suggestions']
  assert tried[0]['change'] == '--config.model.remat=full' and not tried[0]['fits']
  assert [t['change'] for t in tried[1:]] == [f'--config.batch_size={512 >> k}' for k in range(1, len(tried))]
  assert tried[-1]['fits'] and not any(t['fits'] for t in tried[:-1])
  assert tried[-1]['peak_bytes_per_chip'] < r['hbm_per_chip_bytes'] < tried[-2]['peak_bytes_per_chip']
  assert f'{tried[-1]["change"]}: ' in proc.stdout and '-> fits' in proc.stdout.split('what would fit')[1]


@pytest.mark.slow
@needs_libtpu
def test_rl_programs_share_one_mesh_with_resident_models(tmp_path):
  proc, r = _run(tmp_path, '--config', 'configs/rl.py', '--topology', 'v5e:2x2', '--config.mesh.data=1',
                 '--config.mesh.fsdp=-1', '--programs', 'update,judge')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [p['name'] for p in r['programs']] == ['update', 'judge']
  assert set(r['resident']) == {'policy state', 'reference', 'judge'}
  # runs/sft and runs/judge are absent here: both architectures come from config.model, and say so.
  assert r['architectures from'] == {'policy': 'config.model', 'judge': 'config.model'}
  worst = max(p['working_bytes'] for p in r['programs'])
  assert r['peak_bytes_per_chip'] == sum(r['resident'].values()) + worst


def test_unknown_generation_names_the_flag():
  with pytest.raises(ValueError, match=r"--topology='v9x:2x2'.*v4.*v5e.*v5p.*v6e"):
    aot_compile.chip_for('v9x:2x2')


@needs_libtpu
def test_bad_flags_are_one_line_errors(tmp_path):
  proc, _ = _run(tmp_path, '--config', 'configs/sft.py', '--topology', 'v5e:2x2', '--programs', 'sample')
  assert proc.returncode == 1
  assert "--programs: ['sample'] are not programs of the sft trainer" in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_candidates_follow_what_the_config_already_does():
  """The changes `suggest` compiles: FSDP over every chip unless the mesh is already that, full remat
  unless set, then halved batches and sequences (sft/judge), in that order."""
  import configs.sft
  config = configs.sft.get_config('size=llama3.1-8b')
  config.mesh.data, config.mesh.fsdp, config.model.remat = -1, 1, 'none'
  config.batch_size, config.data.seq_len = 24, 4096
  got = aot_compile._candidates(config, 8)
  assert got == [{'mesh.data': 1, 'mesh.fsdp': -1}, {'model.remat': 'full'},
                 [{'batch_size': 12}, {'batch_size': 6}, {'batch_size': 3}],
                 [{'data.seq_len': n} for n in (2048, 1024, 512, 256)]]
  config.mesh.data, config.mesh.fsdp, config.model.remat = 1, 8, 'full'
  assert aot_compile._candidates(config, 8)[0] == [{'batch_size': 12}, {'batch_size': 6}, {'batch_size': 3}]

