"""Launcher environments: who started this process, and its rank, world, local rank and master.

Each launcher is one small class (Lightning's ``plugins/environments`` shape) that declares the
variables it sets as data; :data:`ENVIRONMENTS` tries them innermost first (torchrun started
inside a Slurm step wins over the step).  Everything that needs a rank asks here: ``init()``
through :func:`detect`, device selection through :func:`placement`.  Torch-free.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from hal.distributed.env import MAX_WORLD_SIZE, Env, address
from hal.errors import ConfigError
from hal.parse import parse_int

#: Master port when neither MASTER_PORT nor a job id says one (torchrun's default).
DEFAULT_PORT = 29500
#: Ports derived from a job id lie in [PORT_BASE, PORT_BASE + PORT_SPAN) (Lightning's Slurm rule).
PORT_BASE, PORT_SPAN = 15000, 10000


@dataclass(frozen=True)
class Placement:
    """Where this rank sits, before any master is looked up: what device selection needs."""

    environment: str
    rank: int
    world_size: int
    local_rank: int
    local_rank_var: str
    local_world_size: int | None = None
    local_world_size_var: str = ""
    node_rank: int | None = None
    num_nodes: int | None = None


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def derived_port(job_id: str) -> int:
    """A port every rank of one job derives alike: 15000 + the id's last four digits (or a hash)."""
    digits = job_id.strip()
    number = int(digits[-4:]) if digits.isascii() and digits.isdigit() else zlib.crc32(digits.encode())
    return PORT_BASE + number % PORT_SPAN


class Environment:
    """One launcher, declared as data: the variables it sets, tried in the listed order each."""

    #: The name ``World.environment`` carries.
    name: ClassVar[str] = ""
    #: What the reason calls it.
    title: ClassVar[str] = ""
    #: Any of these set means this launcher started the process.
    markers: ClassVar[tuple[str, ...]] = ()
    rank_vars: ClassVar[tuple[str, ...]] = ()
    world_size_vars: ClassVar[tuple[str, ...]] = ()
    local_rank_vars: ClassVar[tuple[str, ...]] = ()
    local_world_size_vars: ClassVar[tuple[str, ...]] = ()
    node_rank_vars: ClassVar[tuple[str, ...]] = ()
    num_nodes_vars: ClassVar[tuple[str, ...]] = ()
    #: Variables naming the job, for a port every rank derives alike.
    job_id_vars: ClassVar[tuple[str, ...]] = ()
    #: Must the local rank be set (else 0)?
    needs_local_rank: ClassVar[bool] = True

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        """Did this launcher start the process?"""
        return any(environ.get(v, "").strip() for v in cls.markers)

    @classmethod
    def _number(cls, environ: Mapping[str, str], names: tuple[str, ...], what: str, *,
                lo: int = 0, required: bool = True) -> tuple[str, int] | None:
        found = _first(environ, names)
        if found is None:
            if required:
                raise ConfigError(f"{cls.title} environment incomplete: {what} ({' or '.join(names)}) "
                                  "not set")
            return None
        return found[0], parse_int(found[0], found[1], lo=lo, hi=MAX_WORLD_SIZE)

    @classmethod
    def local_world_size(cls, environ: Mapping[str, str], node_rank: int | None) -> tuple[str, int] | None:
        """Ranks on this node, and the variable that says so; None when the launcher is silent."""
        return cls._number(environ, cls.local_world_size_vars, "local world size", lo=1, required=False)

    @classmethod
    def placement(cls, environ: Mapping[str, str]) -> Placement:
        """This rank's place, checked: one-line ConfigErrors naming the variables and values."""
        rank_var, rank = cls._number(environ, cls.rank_vars, "rank")  # type: ignore[misc]
        size_var, size = cls._number(environ, cls.world_size_vars, "world size", lo=1)  # type: ignore[misc]
        if rank >= size:
            raise ConfigError(f"{rank_var}={rank} with {size_var}={size}: expected "
                              f"0 <= {rank_var} < {size_var}")
        local = cls._number(environ, cls.local_rank_vars, "local rank", required=cls.needs_local_rank)
        local_var, local_rank = local or (cls.local_rank_vars[0] if cls.local_rank_vars else "", 0)
        node = cls._number(environ, cls.node_rank_vars, "node rank", required=False)
        nodes = cls._number(environ, cls.num_nodes_vars, "node count", lo=1, required=False)
        if node and nodes and node[1] >= nodes[1]:
            raise ConfigError(f"{node[0]}={node[1]} with {nodes[0]}={nodes[1]}: expected "
                              f"0 <= {node[0]} < {nodes[0]}")
        per_node = cls.local_world_size(environ, node[1] if node else None)
        limit_var, limit = per_node or (size_var, size)
        if local_rank >= limit or (per_node and per_node[1] > size):
            raise ConfigError(f"{local_var}={local_rank} with {limit_var}={environ.get(limit_var)} "
                              f"and {size_var}={size}: expected 0 <= {local_var} < ranks on this "
                              f"node <= {size_var}")
        return Placement(cls.name, rank, size, local_rank, local_var,
                         per_node[1] if per_node else None, per_node[0] if per_node else "",
                         node[1] if node else None, nodes[1] if nodes else None)

    @classmethod
    def main_address(cls, environ: Mapping[str, str], place: Placement) -> tuple[str, str]:
        """The master's host and where it came from: MASTER_ADDR, or 127.0.0.1 on one node."""
        given = environ.get("MASTER_ADDR", "").strip()
        if given:
            return address(given), "MASTER_ADDR"
        if place.world_size == 1 or place.local_world_size == place.world_size:
            return "127.0.0.1", f"all {place.world_size} ranks on this node"
        job_nodes = environ.get("SLURM_JOB_NODELIST", "").strip()
        if job_nodes:  # mpirun inside a Slurm allocation starts rank 0 on the first node
            return first_host("SLURM_JOB_NODELIST", job_nodes), "the first host of SLURM_JOB_NODELIST"
        raise ConfigError(f"{cls.title}: {place.world_size} ranks over several nodes and no "
                          "MASTER_ADDR: pass rank 0's host (e.g. mpirun -x MASTER_ADDR=HOST)")

    @classmethod
    def main_port(cls, environ: Mapping[str, str]) -> tuple[int, str]:
        """The master's port and where it came from: MASTER_PORT, else derived from the job id."""
        given = environ.get("MASTER_PORT", "").strip()
        if given:
            return parse_int("MASTER_PORT", given, lo=1, hi=65535), "MASTER_PORT"
        job = _first(environ, cls.job_id_vars)
        if job:
            return derived_port(job[1]), f"derived from {job[0]}={job[1]}"
        return DEFAULT_PORT, "the default port"

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> Env:
        """The whole environment of this rank, master included, checked."""
        place = cls.placement(environ)
        host, host_from = cls.main_address(environ, place)
        port, port_from = cls.main_port(environ)
        reason = (f"{cls.title}: rank {place.rank} of {place.world_size} from "
                  f"{cls.rank_vars[0]}/{cls.world_size_vars[0]}, master {host} ({host_from}), "
                  f"port {port} ({port_from})")
        return Env(place.rank, place.world_size, place.local_rank, host, port, cls.name,
                   place.node_rank, place.num_nodes, place.local_world_size, reason)


def first_host(var: str, nodelist: str) -> str:
    """The first host of a Slurm host list (``node[01-04],gpu7``), expanded by python-hostlist."""
    head = nodelist.split(",", 1)[0]
    if "[" not in head:
        return address(head)
    try:
        import hostlist
    except ImportError:
        raise ConfigError(f"{var}={nodelist[:60]!r} is a compressed Slurm host list: install "
                          "python-hostlist to expand it (pip install 'torch-hal[cluster]')") from None
    try:
        hosts = hostlist.expand_hostlist(nodelist)
    except hostlist.BadHostlist as exc:
        raise ConfigError(f"{var}={nodelist[:60]!r} does not expand as a Slurm host list: {exc}") from None
    if not hosts:
        raise ConfigError(f"{var}={nodelist[:60]!r} names no host")
    return address(hosts[0])


class Torchrun(Environment):
    """torchrun / torchelastic, and anything else setting torchrun's variables (``hal run``)."""

    name, title = "torchrun", "torchrun"
    markers = ("RANK", "WORLD_SIZE")
    rank_vars, world_size_vars, local_rank_vars = ("RANK",), ("WORLD_SIZE",), ("LOCAL_RANK",)
    local_world_size_vars, node_rank_vars = ("LOCAL_WORLD_SIZE",), ("GROUP_RANK",)
    #: torchrun sets all of these; its agent also TORCHELASTIC_RUN_ID.
    required: ClassVar[tuple[str, ...]] = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> Env:
        missing = [v for v in cls.required if not environ.get(v, "").strip()]
        if missing:
            raise ConfigError(
                f"distributed environment incomplete: {', '.join(missing)} not set (torchrun and "
                f"'hal run' set all of {', '.join(cls.required)}; unset RANK and WORLD_SIZE for "
                "one process)")
        env = super().read(environ)
        run_id = environ.get("TORCHELASTIC_RUN_ID", "").strip()
        if run_id:
            env = _with_reason(env, env.reason.replace(
                "torchrun:", f"torchrun/torchelastic agent (TORCHELASTIC_RUN_ID={run_id}):", 1))
        return env


class Kubernetes(Torchrun):
    """A Kubernetes PyTorchJob/JobSet pod started without torchrun: the operator sets torchrun's
    variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; one process per pod)."""

    name = "kubernetes"
    title = "Kubernetes PyTorchJob/JobSet (the operator set torchrun's variables)"
    required = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    needs_local_rank = False

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return (super().detect(environ) and bool(environ.get("KUBERNETES_SERVICE_HOST"))
                and not environ.get("TORCHELASTIC_RUN_ID"))


class OpenMPI(Environment):
    """``mpirun``/``mpiexec`` of Open MPI (OMPI_COMM_WORLD_*)."""

    name, title = "openmpi", "Open MPI"
    markers = rank_vars = ("OMPI_COMM_WORLD_RANK",)
    world_size_vars, local_rank_vars = ("OMPI_COMM_WORLD_SIZE",), ("OMPI_COMM_WORLD_LOCAL_RANK",)
    local_world_size_vars = ("OMPI_COMM_WORLD_LOCAL_SIZE",)  # (its NODE_RANK is a rank on the node)
    job_id_vars = ("OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE", "OMPI_MCA_orte_ess_jobid")


class Mvapich(Environment):
    """MVAPICH's ``mpirun_rsh``/``mpiexec`` (MV2_COMM_WORLD_*)."""

    name, title = "mvapich", "MVAPICH"
    markers = rank_vars = ("MV2_COMM_WORLD_RANK",)
    world_size_vars, local_rank_vars = ("MV2_COMM_WORLD_SIZE",), ("MV2_COMM_WORLD_LOCAL_RANK",)
    local_world_size_vars = ("MV2_COMM_WORLD_LOCAL_SIZE",)
    job_id_vars = ("MPIRUN_ID",)


class Pmi(Environment):
    """MPICH's Hydra (and its derivatives') ``mpiexec`` (PMI_RANK/PMI_SIZE with MPI_LOCALRANKID).

    ``srun --mpi=pmi2`` sets PMI_RANK without MPI_LOCALRANKID: that is a Slurm step, read as one.
    """

    name, title = "pmi", "MPICH/Hydra (PMI)"
    rank_vars, world_size_vars, local_rank_vars = ("PMI_RANK",), ("PMI_SIZE",), ("MPI_LOCALRANKID",)
    local_world_size_vars = ("MPI_LOCALNRANKS",)
    job_id_vars = ("PMI_KVSNAME", "PMI_JOBID")

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return bool(environ.get("PMI_RANK", "").strip() and environ.get("MPI_LOCALRANKID", "").strip())


class Slurm(Environment):
    """A task of an ``srun`` step (SLURM_PROCID within SLURM_STEP_ID); the master is the first
    host of the step's node list, the port derived from the job id (MASTER_ADDR/PORT override)."""

    name, title = "slurm", "Slurm (srun step)"
    markers = ("SLURM_STEP_ID", "SLURM_STEPID")
    rank_vars, world_size_vars = ("SLURM_PROCID",), ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    local_rank_vars, node_rank_vars = ("SLURM_LOCALID",), ("SLURM_NODEID",)
    num_nodes_vars = ("SLURM_STEP_NUM_NODES", "SLURM_NNODES")
    job_id_vars = ("SLURM_JOB_ID", "SLURM_JOBID")
    nodelist_vars = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return super().detect(environ) and bool(environ.get("SLURM_PROCID", "").strip())

    @classmethod
    def local_world_size(cls, environ: Mapping[str, str], node_rank: int | None) -> tuple[str, int] | None:
        found = _first(environ, ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"))
        if found is None or node_rank is None:
            return None
        var, text = found
        try:
            import hostlist

            counts = hostlist.parse_slurm_tasks_per_node(text)
        except ImportError:  # plain counts only ("2,1"); the "2(x3)" form needs hostlist
            try:
                counts = [parse_int(var, t, hi=MAX_WORLD_SIZE) for t in text.split(",")]
            except ConfigError:
                counts = []
        except Exception:
            counts = []
        if not counts or node_rank >= len(counts):
            raise ConfigError(f"{var}={text[:60]!r} gives no task count for SLURM_NODEID={node_rank}")
        return var, counts[node_rank]

    @classmethod
    def main_address(cls, environ: Mapping[str, str], place: Placement) -> tuple[str, str]:
        given = environ.get("MASTER_ADDR", "").strip()
        if given:
            return address(given), "MASTER_ADDR"
        found = _first(environ, cls.nodelist_vars)
        if found is None:
            raise ConfigError(f"Slurm step without a node list ({', '.join(cls.nodelist_vars)} "
                              "unset) and no MASTER_ADDR")
        return first_host(*found), f"the first host of {found[0]}"


#: Innermost launcher first: a launcher started inside another (torchrun or mpirun inside a
#: Slurm job) sets its variables last, over the outer one's, and the first that applies wins.
ENVIRONMENTS: list[type[Environment]] = [Kubernetes, Torchrun, OpenMPI, Mvapich, Pmi, Slurm]

#: Every variable a launcher environment reads (tests and ``hal doctor`` clear or show them).
LAUNCHER_VARS: tuple[str, ...] = ()


def _all_vars() -> tuple[str, ...]:
    names: dict[str, None] = {}
    for env in ENVIRONMENTS:
        for group in (env.markers, env.rank_vars, env.world_size_vars, env.local_rank_vars,
                      env.local_world_size_vars, env.node_rank_vars, env.num_nodes_vars):
            names.update(dict.fromkeys(group))
    names.update(dict.fromkeys(("MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_NODELIST",
                                "SLURM_STEP_TASKS_PER_NODE", "MPI_LOCALRANKID", "PMI_RANK")))
    return tuple(names)


LAUNCHER_VARS = _all_vars()


def applicable(environ: Mapping[str, str]) -> list[type[Environment]]:
    """Every environment that applies here, innermost first."""
    return [env for env in ENVIRONMENTS if env.detect(environ)]


def _outer_size(env: type[Environment], environ: Mapping[str, str]) -> tuple[str, int] | None:
    found = _first(environ, env.world_size_vars)
    if found is None:
        return None
    try:
        return found[0], parse_int(found[0], found[1], hi=MAX_WORLD_SIZE)
    except ConfigError:
        return None  # not a size: this outer launcher says nothing to compare


def _winner(environ: Mapping[str, str]) -> tuple[type[Environment], str] | None:
    """The innermost environment and a note naming the outer ones; ConfigError on disagreement."""
    found = applicable(environ)
    if not found:
        return None
    inner, outer = found[0], found[1:]
    if not outer:
        return inner, ""
    inner_size = _outer_size(inner, environ)
    for other in outer:
        size = _outer_size(other, environ)
        if inner_size and size and inner_size[1] < size[1]:
            raise ConfigError(
                f"launchers disagree on the world size: {inner_size[0]}={inner_size[1]} "
                f"({inner.title}) but {size[0]}={size[1]} ({other.title}); one launcher inside "
                "another must start at least as many ranks (each outer task running its own "
                "small world would collide)")
    names = ", ".join(o.title for o in outer)
    return inner, (f"; {inner.title} is the innermost launcher (started inside {names}, whose "
                   "variables it overrides)")


def detect(environ: Mapping[str, str]) -> Env | None:
    """This rank's launcher environment, checked, or None when no launcher started it."""
    win = _winner(environ)
    if win is None:
        return None
    cls, note = win
    env = cls.read(environ)
    return _with_reason(env, env.reason + note) if note else env


def placement(environ: Mapping[str, str]) -> Placement | None:
    """This rank's placement for device selection (no master looked up), or None.

    Without a launcher, a lone torchrun LOCAL_RANK still names the local index.
    """
    win = _winner(environ)
    if win is not None:
        return win[0].placement(environ)
    value = environ.get("LOCAL_RANK")
    if value is None:
        return None
    local = parse_int("LOCAL_RANK", value, hi=MAX_WORLD_SIZE)
    return Placement("torchrun", 0, local + 1, local, "LOCAL_RANK")


def _with_reason(env: Env, reason: str) -> Env:
    from dataclasses import replace

    return replace(env, reason=reason)


@contextlib.contextmanager
def registered(env: type[Environment], *, before: str | None = None) -> Iterator[type[Environment]]:
    """Try ``env`` (innermost first, or just before the one named ``before``) inside a ``with``."""
    if any(e.name == env.name for e in ENVIRONMENTS):
        raise ConfigError(f"launcher environment name {env.name!r} is already used; choose another")
    names = [e.name for e in ENVIRONMENTS]
    at = names.index(before) if before in names else 0
    ENVIRONMENTS.insert(at, env)
    try:
        yield env
    finally:
        ENVIRONMENTS.remove(env)
