import math
import time

from deliberative.common import progress


def test_durations_read_the_same_everywhere():
  assert progress.duration(0) == '0:00'
  assert progress.duration(59.9) == '0:59'
  assert progress.duration(3599) == '59:59'
  assert progress.duration(3600) == '1:00:00'
  assert progress.duration(3 * 3600 + 62) == '3:01:02'
  assert progress.duration(62, always_hours=True) == '0:01:02'
  assert progress.duration(math.inf) == progress.duration(math.nan) == '?'
  assert progress.duration(-5) == '0:00'


def test_rate_and_eta_count_only_this_runs_work():
  started = time.perf_counter() - 10.0
  line = progress.rate_and_eta(30, 100, started, 'prompts', done_before=10)
  rate = float(line.split()[0])
  assert 1.9 < rate <= 2.0 and line.split()[1] == 'prompts/s'
  assert line.endswith('ETA 0:35') or line.endswith('ETA 0:36')  # 70 left at ~2/s
  assert progress.rate_and_eta(10, 100, time.perf_counter(), 'rows', done_before=10).endswith('ETA ?')
