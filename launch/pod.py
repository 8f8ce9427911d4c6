"""Runs training on a Cloud TPU slice: queued resource, code on every worker, one process per host.

  python launch/pod.py create --name dl-sft --zone us-east5-a --accelerator_type v5p-64 --spot
  python launch/pod.py setup  --name dl-sft --zone us-east5-a
  python launch/pod.py run    --name dl-sft --zone us-east5-a --config configs/sft.py \\
      --workdir /mnt/runs/sft -- --config.total_steps=2000
  python launch/pod.py watch  --name dl-sft --zone us-east5-a --accelerator_type v5p-64 --spot \\
      --config configs/sft.py --workdir /mnt/runs/sft       # create, setup, run; redo all after a preemption
  python launch/pod.py delete --name dl-sft --zone us-east5-a

Every subcommand takes --dry_run: the gcloud/tar commands are printed (shell-quoted, one a line)
instead of run. `run` starts `python -m deliberative.train ... --coordinator_address=auto` on all
workers at once (jax.distributed.initialize finds the slice's hosts itself); each worker's lines
come back prefixed with its number and are split into runs/pod_logs/<name>/worker-N.log (all.log:
everything; runs/ is git-ignored, so the logs never travel to the workers with the code). The
trainer resumes from the newest checkpoint in --workdir, so `watch` only has to recreate the slice
and rerun the same command; the workdir must outlive the slice (see the README).
Standard library only: this runs on a laptop with nothing but gcloud installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = '~/deliberative'  # ~ is expanded by each worker's shell
REMOTE_TARBALL = '~/deliberative.tgz'

# accelerator generation -> default TPU VM image (cloud.google.com/tpu/docs/runtimes)
RUNTIMES = {
    'v4': 'tpu-ubuntu2204-base',
    'v5litepod': 'v2-alpha-tpuv5-lite',
    'v5p': 'v2-alpha-tpuv5',
    'v6e': 'v2-alpha-tpuv6e',
}
ACCELERATOR_RE = re.compile(r'^(' + '|'.join(RUNTIMES) + r')-([1-9][0-9]*)$')
# queued-resource states (state.state) in which the slice is gone and must be recreated
LOST_STATES = ('SUSPENDING', 'SUSPENDED', 'FAILED')
WAIT_STATES = ('ACCEPTED', 'PROVISIONING', 'WAITING_FOR_RESOURCES', 'CREATING')
# what deliberative/trainers/runtime.py logs after saving on SIGTERM (a preemption notice)
PREEMPTED_MARK = 'SIGTERM: saved step'
# each worker asks the metadata server its index, so the local side can split the lines by worker
WORKER_NUMBER = ('curl -s -H Metadata-Flavor:Google '
                 'http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number')
WORKER_PREFIX_RE = re.compile(r'^\[worker-(\d+)\] ?(.*)$', re.S)


class PodError(Exception):
  """A mistake the user can fix (names the flag); printed as one line."""


# -- pure command builders ------------------------------------------------------------------------

def check_accelerator_type(accelerator_type: str) -> str:
  m = ACCELERATOR_RE.match(accelerator_type or '')
  if not m:
    raise PodError(f'--accelerator_type={accelerator_type!r}: expected GENERATION-SIZE such as v5p-64, '
                   f'v5litepod-16 or v6e-8 (generations: {", ".join(RUNTIMES)})')
  return m.group(1)


def runtime_version(accelerator_type: str, requested: str = '') -> str:
  return requested or RUNTIMES[check_accelerator_type(accelerator_type)]


def _where(zone: str, project: str = '') -> list[str]:
  return [f'--zone={zone}'] + ([f'--project={project}'] if project else [])


def describe_cmd(name: str, zone: str, project: str = '', state_only: bool = False) -> list[str]:
  cmd = ['gcloud', 'compute', 'tpus', 'queued-resources', 'describe', name, *_where(zone, project)]
  return cmd + ['--format=value(state.state)'] if state_only else cmd


def create_cmd(name: str, zone: str, accelerator_type: str, runtime: str = '', spot: bool = False,
               project: str = '') -> list[str]:
  # The node (the TPU VM slice) takes the queued resource's name: one name for ssh and for delete.
  cmd = ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', name, f'--node-id={name}',
         *_where(zone, project), f'--accelerator-type={accelerator_type}',
         f'--runtime-version={runtime_version(accelerator_type, runtime)}']
  return cmd + ['--spot'] if spot else cmd


def delete_cmd(name: str, zone: str, project: str = '') -> list[str]:
  # --force deletes the slice with its queued resource; --quiet: no prompt in an unattended watch
  return ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', name, *_where(zone, project),
          '--force', '--quiet']


def local_tarball(name: str) -> str:
  # one per slice: a sweep sets up several slices at once
  return os.path.join(tempfile.gettempdir(), f'deliberative-code-{name}.tgz')


def tarball_cmd(tarball: str, repo: str = REPO) -> list[str]:
  # The working tree as git sees it (tracked + untracked-not-ignored): no runs/, no .venv, no caches.
  # A tracked file deleted locally is skipped rather than failing the copy.
  script = (f'git -C {shlex.quote(repo)} ls-files -z --cached --others --exclude-standard | '
            f'tar -C {shlex.quote(repo)} --null --ignore-failed-read -czf {shlex.quote(tarball)} -T -')
  return ['bash', '-o', 'pipefail', '-c', script]


def scp_cmd(name: str, zone: str, project: str = '') -> list[str]:
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', local_tarball(name), f'{name}:{REMOTE_TARBALL}',
          '--worker=all', *_where(zone, project)]


def ssh_cmd(name: str, zone: str, remote: str, project: str = '') -> list[str]:
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', name, '--worker=all', *_where(zone, project),
          f'--command={remote}']


def setup_script(python: str = 'python3.11') -> str:
  # The TPU images ship Ubuntu 22.04's Python 3.10; the pinned requirements need 3.11 (as here).
  return ' && '.join([
      'set -e',
      f'(command -v {python} >/dev/null || (sudo apt-get -qq update && '
      f'sudo apt-get -qq install -y {python} {python}-venv))',
      f'mkdir -p {REMOTE_DIR}',
      f'tar -xzf {REMOTE_TARBALL} -C {REMOTE_DIR}',
      f'cd {REMOTE_DIR}',
      f'(test -x .venv/bin/python || {python} -m venv .venv)',
      '.venv/bin/pip install -q --upgrade pip',
      '.venv/bin/pip install -q -r requirements.txt -r requirements-tpu.txt',
  ])


def setup_cmds(name: str, zone: str, project: str = '', python: str = 'python3.11') -> list[list[str]]:
  return [tarball_cmd(local_tarball(name)), scp_cmd(name, zone, project),
          ssh_cmd(name, zone, setup_script(python), project)]


def train_argv(config: str, workdir: str, extra: list[str] = ()) -> list[str]:
  """deliberative.train's arguments on every worker; the coordinator is found from the TPU metadata
  (deliberative/train.py: --coordinator_address=auto -> jax.distributed.initialize())."""
  if not config:
    raise PodError('--config is required (a path inside the repository, e.g. configs/sft.py)')
  if not workdir:
    raise PodError('--workdir is required: the run resumes from its checkpoints there after a preemption')
  return ['--config', config, '--workdir', workdir, *extra, '--coordinator_address=auto']


def workdir_warning(workdir: str) -> str:
  """Why this workdir would not survive a preemption or be shared by the hosts ('' when fine)."""
  if '://' in workdir:  # gs:// and other URLs: every host reaches the same bucket (deliberative/common/storage.py)
    return ''
  if not os.path.isabs(workdir):
    return (f'--workdir={workdir}: relative, so on each worker\'s own disk: the hosts do not share checkpoints '
            'and a recreated slice starts over; pass a path on a mount every worker shares')
  return ''


def run_script(argv: list[str]) -> str:
  # pipefail: the worker's exit code is the trainer's, not sed's; sed -u: lines arrive as written.
  train = shlex.join(['.venv/bin/python', '-m', 'deliberative.train', *argv])
  return (f'set -o pipefail; cd {REMOTE_DIR} && W=$({WORKER_NUMBER}) && '
          f'{train} 2>&1 | sed -u "s/^/[worker-$W] /"')


def run_cmd(name: str, zone: str, argv: list[str], project: str = '') -> list[str]:
  return ssh_cmd(name, zone, run_script(argv), project)


def split_worker_line(line: str) -> tuple[str, str]:
  """('3', text) for a '[worker-3] text' line; ('', line) for gcloud's own lines."""
  m = WORKER_PREFIX_RE.match(line)
  return (m.group(1), m.group(2)) if m else ('', line)


# -- running or printing --------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
  rc: int
  out: str = ''


class Runner:
  """Runs a command (or prints it with dry_run); the only place with side effects."""

  def __init__(self, dry_run: bool = False, echo=None):
    self.dry_run = dry_run
    # a dry run's commands are its output; a real run shows them on stderr, as `set -x` would
    self.echo = echo or (print if dry_run else lambda line: print(f'+ {line}', file=sys.stderr, flush=True))

  def require_gcloud(self, subcommand: str) -> None:
    if not self.dry_run and shutil.which('gcloud') is None:
      raise PodError(f'gcloud is not on PATH (needed by `{subcommand}`): install the Google Cloud SDK, '
                     'or pass --dry_run to print the commands')

  def __call__(self, cmd: list[str], capture: bool = False, log_dir: str = '') -> Result:
    self.echo(shlex.join(cmd))
    if self.dry_run:
      return Result(0, '')
    if capture:
      p = subprocess.run(cmd, capture_output=True, text=True)
      return Result(p.returncode, p.stdout)
    if log_dir:
      return self._logged(cmd, log_dir)
    return Result(subprocess.run(cmd).returncode)

  def sleep(self, seconds: float) -> None:
    if not self.dry_run:
      time.sleep(seconds)

  def _logged(self, cmd: list[str], log_dir: str) -> Result:
    """Streams the command's output to the terminal, log_dir/all.log and log_dir/worker-N.log."""
    os.makedirs(log_dir, exist_ok=True)
    files, seen_preempt = {}, False
    with open(os.path.join(log_dir, 'all.log'), 'a', encoding='utf-8') as all_log:
      p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
      try:
        for line in p.stdout:
          sys.stdout.write(line)
          all_log.write(line)
          worker, text = split_worker_line(line)
          seen_preempt |= PREEMPTED_MARK in text
          if worker:
            if worker not in files:
              files[worker] = open(os.path.join(log_dir, f'worker-{worker}.log'), 'a', encoding='utf-8')
            files[worker].write(text)
            files[worker].flush()
        rc = p.wait()
      finally:
        if p.poll() is None:  # Ctrl-C: closing ssh stops the remote processes with it
          p.kill()
          p.wait()
        for f in files.values():
          f.close()
    return Result(rc, PREEMPTED_MARK if seen_preempt else '')


# -- subcommands ----------------------------------------------------------------------------------

def state(run: Runner, a) -> str:
  """The queued resource's state, or '' when it does not exist."""
  r = run(describe_cmd(a.name, a.zone, a.project, state_only=True), capture=True)
  return r.out.strip() if r.rc == 0 else ''


def create(run: Runner, a) -> int:
  check_accelerator_type(a.accelerator_type)
  current = state(run, a)
  if current and current not in LOST_STATES:
    print(f'# {a.name}: exists ({current}); reusing it', file=sys.stderr)
  else:
    if current:  # a suspended/failed queued resource keeps its name until deleted
      run(delete_cmd(a.name, a.zone, a.project))
    r = run(create_cmd(a.name, a.zone, a.accelerator_type, a.runtime_version, a.spot, a.project))
    if r.rc:
      return r.rc
  return wait_active(run, a)


def wait_active(run: Runner, a) -> int:
  deadline = time.monotonic() + a.wait_minutes * 60
  while True:
    current = state(run, a)
    if run.dry_run or current == 'ACTIVE':
      return 0
    if current in LOST_STATES or not current:
      print(f'error: {a.name} is {current or "gone"} while waiting for it to become ACTIVE', file=sys.stderr)
      return 1
    if time.monotonic() > deadline:
      print(f'error: {a.name} still {current} after --wait_minutes={a.wait_minutes}', file=sys.stderr)
      return 1
    print(f'# {a.name}: {current}; polling every {a.poll_seconds}s', file=sys.stderr)
    run.sleep(a.poll_seconds)


def setup(run: Runner, a) -> int:
  for cmd in setup_cmds(a.name, a.zone, a.project, a.python):
    rc = run(cmd).rc
    if rc:
      return rc
  return 0


def train(run: Runner, a) -> Result:
  argv = train_argv(a.config, a.workdir, a.train_args)
  warning = workdir_warning(a.workdir)
  if warning:
    print(f'warning: {warning}', file=sys.stderr)
  return run(run_cmd(a.name, a.zone, argv, a.project), log_dir=os.path.join(a.log_root, a.name))


def delete(run: Runner, a) -> int:
  return run(delete_cmd(a.name, a.zone, a.project)).rc


def watch(run: Runner, a) -> int:
  """create -> setup -> run, again after each preemption (up to --max_restarts), until the run ends
  on a slice that is still ACTIVE. A failure on a healthy slice is the trainer's and is not retried."""
  train_argv(a.config, a.workdir, a.train_args)  # flag errors before a slice is paid for
  for attempt in range(a.max_restarts + 1):
    rc = create(run, a) or setup(run, a)
    if rc and not run.dry_run:
      if state(run, a) in LOST_STATES:  # preempted while provisioning or copying
        run.sleep(a.poll_seconds)  # a SUSPENDING resource cannot be deleted yet
        continue
      return rc
    result = train(run, a)
    run.sleep(a.poll_seconds)  # a preemption notice comes before the state changes
    current = state(run, a)
    lost = current in LOST_STATES or not current or PREEMPTED_MARK in result.out
    if run.dry_run:
      run(delete_cmd(a.name, a.zone, a.project))  # shown: what a preemption leads to, then create again
      return 0
    if not lost:
      if result.rc == 0 and a.delete_when_done:
        delete(run, a)
      return result.rc
    print(f'# {a.name}: preempted ({current or "gone"}), restart {attempt + 1}/{a.max_restarts}', file=sys.stderr)
  print(f'error: {a.name} preempted more than --max_restarts={a.max_restarts} times', file=sys.stderr)
  return 1


SUBCOMMANDS = {'create': create, 'setup': setup, 'run': lambda run, a: train(run, a).rc, 'watch': watch,
               'delete': delete}


# -- flags ----------------------------------------------------------------------------------------

def add_slice_args(p: argparse.ArgumentParser, *, name_required: bool = True, accelerator: bool = True) -> None:
  """The flags that name a slice (shared with launch/sweep.py --pod)."""
  if name_required:
    p.add_argument('--name', required=True, help='queued resource and TPU VM name')
  p.add_argument('--zone', required=True, help='e.g. us-east5-a (v5p), us-west4-a (v5e)')
  p.add_argument('--project', default='', help='GCP project (default: gcloud config)')
  if accelerator:
    p.add_argument('--accelerator_type', default='', help='e.g. v5p-64, v5litepod-16, v6e-8')
    p.add_argument('--runtime_version', default='', help='TPU VM image (default: by accelerator generation)')
    p.add_argument('--spot', action='store_true', help='spot capacity: cheaper, preemptible')
    p.add_argument('--wait_minutes', type=float, default=120, help='how long create waits for ACTIVE')
    p.add_argument('--poll_seconds', type=float, default=60)
  p.add_argument('--python', default='python3.11', help='interpreter for the workers\' venv')
  p.add_argument('--log_root', default=os.path.join('runs', 'pod_logs'),
                 help='per-worker logs go to LOG_ROOT/NAME/worker-N.log')
  p.add_argument('--dry_run', action='store_true', help='print the commands instead of running them')


def add_train_args(p: argparse.ArgumentParser) -> None:
  p.add_argument('--config', default='', help='config path inside the repo (with :ARG), e.g. configs/sft.py')
  p.add_argument('--workdir', default='', help='run directory every worker sees (see the README)')
  # then `-- --config.optim.lr=1e-4 ...`: more deliberative.train flags


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='subcommand', required=True)
  for name in SUBCOMMANDS:
    p = sub.add_parser(name)
    add_slice_args(p)
    if name in ('run', 'watch'):
      add_train_args(p)
    if name == 'watch':
      p.add_argument('--max_restarts', type=int, default=20)
      p.add_argument('--delete_when_done', action='store_true', help='delete the slice after a finished run')
  # Everything after `--` goes to the trainer, untouched (argparse's REMAINDER would also swallow a
  # --dry_run written after the training flags, and then run for real).
  argv = list(sys.argv[1:] if argv is None else argv)
  cut = argv.index('--') if '--' in argv else len(argv)
  a = parser.parse_args(argv[:cut])
  a.train_args = argv[cut + 1:]
  if a.train_args and a.subcommand not in ('run', 'watch'):
    parser.error(f'{a.subcommand} takes no training flags (after --)')
  if a.subcommand in ('create', 'watch') and not a.accelerator_type:
    parser.error(f'{a.subcommand}: --accelerator_type is required (e.g. v5p-64)')
  if a.accelerator_type:
    try:
      check_accelerator_type(a.accelerator_type)
    except PodError as e:
      parser.error(str(e))
  return a


def main(argv=None, runner: Runner | None = None) -> int:
  a = parse_args(argv)
  run = runner or Runner(a.dry_run)
  try:
    run.require_gcloud(a.subcommand)
    return SUBCOMMANDS[a.subcommand](run, a)
  except PodError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
