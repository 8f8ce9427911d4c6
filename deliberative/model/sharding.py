"""Meshes and logical-axis sharding.

Model code names axes logically (`batch, length, embed, heads, kv_heads, kv, mlp, vocab, layers`);
a short rule table (config `mesh.rules`) maps each logical name to mesh axes
(`data, fsdp, tensor`). Activation constraints are resolved against the mesh and rules
made current by `use_mesh`, so the same model code runs sharded or on one device.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
LOGICAL_AXES = ('batch', 'length', 'embed', 'heads', 'kv_heads', 'kv', 'mlp', 'vocab', 'layers')

# Data parallel over data*fsdp, parameters sharded over fsdp (ZeRO-3 style) and tensor.
DEFAULT_RULES = (
    ('batch', ('data', 'fsdp')),
    ('length', None),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('kv', None),
    ('mlp', 'tensor'),
    ('vocab', 'tensor'),
    # The stacked blocks' depth axis (model.scan_layers): replicated, so the scan's slice of a
    # layer is sharded exactly like an unrolled layer's parameter.
    ('layers', None),
)

Rules = tuple[tuple[str, Any], ...]


def mesh_shape(mesh_cfg: Mapping[str, int], n_devices: int) -> tuple[int, ...]:
  """Resolves the config's axis sizes; one axis may be -1 (= the devices left over)."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  free = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(free) > 1:
    raise ValueError(f'mesh: at most one axis may be -1, got {free}')
  fixed = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'mesh: axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}')
  if free:
    if n_devices % fixed:
      raise ValueError(f'mesh: {n_devices} devices are not divisible by the fixed axes product {fixed}')
    sizes[MESH_AXES.index(free[0])] = n_devices // fixed
  if math.prod(sizes) != n_devices:
    raise ValueError(f'mesh: {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {n_devices}')
  return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """`devices`: default all of them; a subset (tests), or a TPU topology's (AOT compilation)."""
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg, len(devices))
  # Auto axis types: JAX 0.10 defaults to Explicit, which rejects mixed-sharding matmuls.
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  try:  # jax.make_mesh orders devices by the physical topology (TPU ICI rings)
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
  except (ValueError, NotImplementedError):  # a subset it cannot lay out: the given order
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def batch_multiple(mesh: Mesh, rules) -> int:
  """How many ways the rules' batch axes split rows on `mesh`: every batch must be a multiple."""
  sizes = dict(mesh.shape)
  return math.prod(sizes[a] for a in dict(normalize_rules(rules)).get('batch', ()))


def normalize_rules(rules) -> Rules:
  """Accepts a tuple of pairs or a mapping (a ConfigDict); validates names."""
  items = rules.items() if hasattr(rules, 'items') else rules
  out = []
  for logical, mesh_axes in items:
    if logical not in LOGICAL_AXES:
      raise ValueError(f'mesh.rules: unknown logical axis {logical!r}; known: {LOGICAL_AXES}')
    axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
    for a in axes:
      if a not in MESH_AXES:
        raise ValueError(f'mesh.rules[{logical!r}]: unknown mesh axis {a!r}; known: {MESH_AXES}')
    out.append((logical, axes))
  return tuple(out)


def logical_to_spec(logical_axes: Sequence[str | None], rules: Rules) -> P:
  table = dict(normalize_rules(rules))
  used: set[str] = set()
  spec = []
  for name in logical_axes:
    axes = tuple(a for a in table.get(name, ()) if a not in used) if name else ()
    used.update(axes)  # a mesh axis may shard only one dimension of an array
    spec.append(axes[0] if len(axes) == 1 else (axes or None))
  return P(*spec)


def rows_sharding(mesh: Mesh, rules, ndim: int) -> NamedSharding:
  """Leading (row) axis split like a batch, the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(('batch',) + (None,) * (ndim - 1), rules))


def shard_rows(mesh: Mesh | None, rules, *xs):
  """Inside jit: host inputs (replicated when passed as numpy) constrained to be split by rows, so
  sharding propagation makes the whole program data-parallel instead of every device doing every row."""
  if mesh is None:
    return xs
  return tuple(jax.lax.with_sharding_constraint(x, rows_sharding(mesh, rules, x.ndim)) for x in xs)


@dataclasses.dataclass(frozen=True)
class _Context:
  mesh: Mesh
  rules: Rules


_CURRENT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar('sharding_ctx', default=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules):
  token = _CURRENT.set(_Context(mesh, normalize_rules(rules)))
  try:
    yield
  finally:
    _CURRENT.reset(token)


def under_mesh(fn: Callable, mesh: Mesh | None, rules) -> Callable:
  """`fn`, run inside `use_mesh(mesh, rules)`; `fn` itself when `mesh` is None (one device).

  Wrap the function a `jax.jit` traces, not the call of the jitted program: `constrain` reads the
  current mesh while jax traces, so a model run by a jitted function traced outside `use_mesh`
  silently drops every activation constraint (then only XLA's propagation shards activations).
  """
  if mesh is None:
    return fn

  @functools.wraps(fn)
  def run(*args, **kwargs):
    with use_mesh(mesh, rules):
      return fn(*args, **kwargs)
  return run


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside `use_mesh`."""
  ctx = _CURRENT.get()
  if ctx is None:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(ctx.mesh, logical_to_spec(logical_axes, ctx.rules)))


def current_platform() -> str:
  """The platform a program traced now is for: the current mesh's devices' (a TPU topology's when
  compiling ahead of time on a CPU host), else the default backend's."""
  ctx = _CURRENT.get()
  return ctx.mesh.devices.flat[0].platform if ctx is not None else jax.default_backend()


def current_axes(logical: str) -> tuple[str, ...]:
  """The mesh axes the current rules split `logical` over; () outside `use_mesh`."""
  ctx = _CURRENT.get()
  return dict(ctx.rules).get(logical, ()) if ctx is not None else ()


def per_shard(fn: Callable, in_axes: Sequence[Sequence[str | None]], out_axes: Sequence[str | None]) -> Callable:
  """`fn` run on each device's shard (shard_map) under the current mesh, its arguments and result
  split by logical names; `fn` itself outside `use_mesh`. For kernels XLA cannot partition (Pallas
  calls), which it would otherwise run on whole, gathered arrays. A logical axis split over the
  mesh must be one `fn` computes independently per slice (batch and heads for attention)."""
  ctx = _CURRENT.get()
  if ctx is None:
    return fn
  specs = tuple(logical_to_spec(axes, ctx.rules) for axes in in_axes)
  return jax.shard_map(fn, mesh=ctx.mesh, in_specs=specs, out_specs=logical_to_spec(out_axes, ctx.rules),
                       check_vma=False)


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def logical_axes_tree(state) -> Any:
  """The `logical_axes` metadata of every variable in an nnx.State (None where absent)."""
  return jax.tree.map(lambda v: getattr(v, 'logical_axes', None) or (None,) * v.ndim, state, is_leaf=_is_var)


def state_shardings(abstract_state, mesh: Mesh, rules) -> Any:
  """NamedShardings for a (possibly abstract) nnx.State, with divisibility checked per array."""
  rules = normalize_rules(rules)

  def one(path, var):
    names = getattr(var, 'logical_axes', None) or (None,) * var.ndim
    spec = logical_to_spec(names, rules)
    for dim, (size, axes) in enumerate(zip(var.shape, tuple(spec) + (None,) * (var.ndim - len(spec)))):
      axes = (axes,) if isinstance(axes, str) else (axes or ())
      n = math.prod(mesh.shape[a] for a in axes)
      if size % n:
        key = '.'.join(str(getattr(p, 'key', p)) for p in path)
        raise ValueError(
            f'parameter {key} dim {dim} ({names[dim]}={size}) is not divisible by mesh axes '
            f'{axes} of total size {n}; change mesh.* or mesh.rules')
    return var.replace(NamedSharding(mesh, spec))

  return jax.tree_util.tree_map_with_path(one, abstract_state, is_leaf=_is_var)


def check_model_fits_mesh(cfg, mesh: Mesh, rules) -> None:
  """Fails early, with the numbers, when head counts or widths cannot split over the mesh."""
  table = dict(normalize_rules(rules))
  for logical, size, field in (('heads', cfg.n_heads, 'n_heads'), ('kv_heads', cfg.n_kv_heads, 'n_kv_heads'),
                               ('mlp', cfg.ffn_dim, 'ffn_dim'), ('vocab', cfg.vocab_size, 'vocab_size'),
                               ('embed', cfg.d_model, 'd_model')):
    axes = table.get(logical, ())
    n = math.prod(mesh.shape[a] for a in axes)
    if size % n:
      shape = ', '.join(f'{a}={mesh.shape[a]}' for a in axes)
      raise ValueError(f'model.{field}={size} is not divisible by mesh axis {shape} '
                       f'(logical axis {logical!r}); choose a mesh whose {"*".join(axes)} divides {size}')


def create_sharded(build: Callable[[], nnx.Module], mesh: Mesh, rules) -> nnx.Module:
  """Builds an nnx module with every parameter born sharded: eval_shape -> shardings -> jit(init)."""
  abstract = nnx.eval_shape(build)
  graphdef, abstract_state = nnx.split(abstract)
  shardings = state_shardings(abstract_state, mesh, rules)
  out_shardings = jax.tree.map(lambda v: v.get_value(), shardings, is_leaf=_is_var)

  def init():
    return jax.tree.map(lambda v: v.get_value(), nnx.state(build()), is_leaf=_is_var)

  init = jax.jit(init, out_shardings=out_shardings)
  values = init()
  state = jax.tree.map(lambda v, x: v.replace(x), abstract_state, values, is_leaf=_is_var)
  return nnx.merge(graphdef, state)


def abstract_model(build: Callable[[], nnx.Module], mesh: Mesh | None = None, rules=None):
  """(graphdef, abstract state) with shardings attached to each ShapeDtypeStruct when a mesh is given."""
  graphdef, abstract_state = nnx.split(nnx.eval_shape(build))
  if mesh is None:
    return graphdef, abstract_state
  shardings = state_shardings(abstract_state, mesh, rules)
  abstract_state = jax.tree.map(
      lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s.get_value())),
      abstract_state, shardings, is_leaf=_is_var)
  return graphdef, abstract_state
