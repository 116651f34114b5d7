"""Static checks of the compose stack (docker/compose.yaml, docker/.env.example, the
Dockerfile and the scripts they use), without a Docker engine.

Every ``check_*`` function takes a :class:`Stack` and returns a list of problems (empty
when the check passes), so the tests can run the same checks on a deliberately broken
copy of the stack and see them fail.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET_WORDS = ("PASSWORD", "SECRET", "KEY", "TOKEN")
ENV_HINT = "docker/.env.example"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker")
# Environment every Airflow component of the stack must get (the shared x-airflow-common env).
AIRFLOW_REQUIRED_ENV = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "NNZOO_TRAINING_QUEUE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "NNZOO_DATA_DIR",
)
# Values that hold credentials although their names do not say so.
CREDENTIAL_ENV = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                  "AIRFLOW__CELERY__RESULT_BACKEND")
FORBIDDEN_COPY_SOURCES = {".", "./", "var", "var/", ".env", "docker/.env", ".venv", ".git"}

_VAR_RE = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
_BRACED_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


def is_secret_name(name: str) -> bool:
    """PASSWORD / SECRET / KEY / TOKEN in the name, except names of files holding them."""
    upper = name.upper()
    if upper.endswith(("_FILE", "_PATH")):
        return False
    return any(word in upper for word in SECRET_WORDS)


@dataclasses.dataclass(frozen=True)
class VarRef:
    name: str
    op: str  # "" (plain), ":-" / "-" (default), ":?" / "?" (required), ":+" / "+"
    arg: str


def var_refs(text: str) -> list[VarRef]:
    """Compose interpolation references in ``text``; ``$$`` is an escaped dollar."""
    refs = []
    for match in _VAR_RE.finditer(text):
        if match.group(0) == "$$":
            continue
        if match.group("bare"):
            refs.append(VarRef(match.group("bare"), "", ""))
            continue
        parsed = _BRACED_RE.match(match.group("braced"))
        if parsed is None:
            refs.append(VarRef("<invalid:" + match.group("braced") + ">", "", ""))
            continue
        refs.append(VarRef(parsed.group("name"), parsed.group("op") or "", parsed.group("arg") or ""))
    return refs


def interpolate_defaults(text: str) -> str:
    """``text`` with each ``${VAR:-default}`` replaced by its default and ``$$`` by ``$``
    (what compose produces when the variable is unset); other references stay."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        parsed = _BRACED_RE.match(match.group("braced") or "")
        if parsed and parsed.group("op") in (":-", "-"):
            return parsed.group("arg")
        return match.group(0)

    return _VAR_RE.sub(replace, text)


_REQUIRED_REF_RE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}")


def mask_refs(text: str) -> str:
    """``text`` with ``${VAR:?...}`` as ``<required:VAR>``, ``${VAR:-x}`` as its default
    and ``$$`` as ``$``: what a URL looks like once compose has filled it in."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        parsed = _BRACED_RE.match(match.group("braced") or "")
        if parsed is None:
            return match.group(0)
        if parsed.group("op") in (":-", "-"):
            return parsed.group("arg")
        return f"<required:{parsed.group('name')}>"

    return _VAR_RE.sub(replace, text)


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            values[key.strip()] = "<no '='>"
            continue
        values[key.strip()] = value.strip()
    return values


@functools.lru_cache(maxsize=64)
def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@dataclasses.dataclass
class Stack:
    """The files of the compose stack, read from a repository root (or a copy of one)."""

    root: Path

    @property
    def compose_path(self) -> Path:
        return self.root / "docker" / "compose.yaml"

    @property
    def env_example_path(self) -> Path:
        return self.root / "docker" / ".env.example"

    @property
    def compose_text(self) -> str:
        return self.compose_path.read_text()

    @property
    def doc(self) -> dict[str, Any]:
        """compose.yaml parsed (a fresh copy: callers may change it)."""
        return copy.deepcopy(_parse_yaml(self.compose_text))

    @property
    def interpolated_text(self) -> str:
        """Every string value of compose.yaml (what compose interpolates; comments and
        keys are not), one per line."""
        return "\n".join(value for _, value in walk_strings(self.doc))

    @property
    def env_example(self) -> dict[str, str]:
        return parse_env_file(self.env_example_path.read_text())

    def services(self) -> dict[str, dict[str, Any]]:
        services = self.doc.get("services") or {}
        return services if isinstance(services, dict) else {}

    def pyproject_extras(self) -> dict[str, list[str]]:
        data = tomllib.loads((self.root / "pyproject.toml").read_text())
        return data.get("project", {}).get("optional-dependencies", {})


def copy_stack(destination: Path, source: Path = REPO_ROOT) -> Stack:
    """A copy of what the stack reads (docker/, pyproject.toml and the build sources) to
    mutate in tests."""
    shutil.copytree(source / "docker", destination / "docker", ignore=shutil.ignore_patterns(".env"))
    shutil.copy2(source / "pyproject.toml", destination / "pyproject.toml")
    shutil.copy2(source / "README.md", destination / "README.md")
    for folder in ("pipelines", "models", "dags"):
        (destination / folder).mkdir()  # COPY sources only need to exist
    return Stack(destination)


# --- helpers on the parsed document -------------------------------------------------


def command_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(part) for part in value)
    return str(value)


def image_entrypoint(stack: Stack) -> str:
    """The ENTRYPOINT of docker/Dockerfile, as one string."""
    entry = ""
    for line in dockerfile_lines(stack.root / "docker" / "Dockerfile"):
        if line.upper().startswith("ENTRYPOINT "):
            body = line.split(None, 1)[1]
            entry = command_text(json.loads(body)) if body.startswith("[") else body
    return entry


def service_command(service: dict[str, Any], stack: Stack | None = None) -> str:
    """Entry point + command of a service; the image's entry point for services built
    from docker/Dockerfile that do not set their own."""
    entrypoint = service.get("entrypoint")
    build = build_of(service)
    if entrypoint is None and stack is not None and build and build.get("dockerfile") == "docker/Dockerfile":
        entrypoint = image_entrypoint(stack)
    return (command_text(entrypoint) + " " + command_text(service.get("command"))).strip()


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def airflow_services(stack: Stack) -> dict[str, dict[str, Any]]:
    """Services that run Airflow (those given the shared Airflow environment)."""
    return {name: svc for name, svc in stack.services().items()
            if "AIRFLOW__CORE__EXECUTOR" in environment(svc)}


def component_service(stack: Stack, component: str) -> tuple[str, dict[str, Any]] | None:
    """The Airflow service whose entry point + command runs ``airflow <component>``."""
    for name, svc in airflow_services(stack).items():
        if re.search(rf"\bairflow\s+{re.escape(component)}\b", service_command(svc, stack)):
            return name, svc
    return None


def option_value(command: str, *flags: str) -> str | None:
    """Value of ``--flag VALUE`` / ``--flag=VALUE`` in a command line."""
    for flag in flags:
        match = re.search(rf"(?:^|\s){re.escape(flag)}(?:=|\s+)(\S+)", command)
        if match:
            return match.group(1).strip("\"'")
    return None


def worker_queues(service: dict[str, Any]) -> set[str]:
    command = interpolate_defaults(service_command(service))
    queues = option_value(command, "--queues", "-q")
    return set(queues.split(",")) if queues else set()


def celery_workers(stack: Stack) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in airflow_services(stack).items()
            if re.search(r"\bairflow\s+celery\s+worker\b", service_command(svc, stack))}


def nvidia_reservations(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
    return [d for d in (devices or []) if isinstance(d, dict) and d.get("driver") == "nvidia"]


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry; source '' for anonymous volumes."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry.get("target", ""))))
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            mounts.append(("", parts[0]))
        else:
            mounts.append((parts[0], parts[1]))
    return mounts


def is_named_volume(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


def build_of(service: dict[str, Any]) -> dict[str, Any] | None:
    build = service.get("build")
    if build is None:
        return None
    return {"context": build} if isinstance(build, str) else build


def dockerfile_lines(path: Path) -> list[str]:
    """Instructions of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def walk_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk_strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


# --- the checks -----------------------------------------------------------------------


def check_top_level(stack: Stack) -> list[str]:
    doc = stack.doc
    if not isinstance(doc, dict):
        return ["compose.yaml is not a mapping"]
    problems = [f"top-level key {key!r} missing" for key in ("services", "volumes") if key not in doc]
    unknown = set(doc) - {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
    problems += [f"unknown top-level key {key!r} (extensions must start with x-)"
                 for key in sorted(unknown) if not str(key).startswith("x-")]
    expected = {"postgres", "redis", "mlflow", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker-cpu", "airflow-worker-gpu"}
    missing = expected - set(stack.services())
    problems += [f"service {name!r} missing" for name in sorted(missing)]
    return problems


def check_images_and_builds(stack: Stack) -> list[str]:
    problems = []
    compose_dir = stack.compose_path.parent
    for name, svc in stack.services().items():
        build = build_of(svc)
        if not svc.get("image") and build is None:
            problems.append(f"service {name}: neither image nor build")
        if build is None:
            continue
        context = (compose_dir / interpolate_defaults(str(build.get("context", ".")))).resolve()
        if not context.is_dir():
            problems.append(f"service {name}: build context {build.get('context')!r} does not exist")
            continue
        dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
        if not dockerfile.is_file():
            problems.append(f"service {name}: dockerfile {build.get('dockerfile')!r} not found in the context")
    return problems


def check_env_example(stack: Stack) -> list[str]:
    """Every variable compose.yaml uses is in .env.example and the other way round; the
    example holds no secret value and the same defaults as compose.yaml."""
    problems = []
    refs = var_refs(stack.interpolated_text)
    used = {ref.name for ref in refs}
    listed = stack.env_example
    problems += [f"${{{name}}} is used in compose.yaml but not listed in {ENV_HINT}"
                 for name in sorted(used - set(listed))]
    problems += [f"{name} is listed in {ENV_HINT} but not used in compose.yaml"
                 for name in sorted(set(listed) - used)]
    for name, value in listed.items():
        if is_secret_name(name) and value:
            problems.append(f"{ENV_HINT}: secret {name} must be empty in the example, not {value[:4]}...")
    for name in sorted(used & set(listed)):
        defaults = {ref.arg for ref in refs if ref.name == name and ref.op in (":-", "-")}
        if len(defaults) > 1:
            problems.append(f"${{{name}}} has different defaults in compose.yaml: {sorted(defaults)}")
        elif defaults and listed[name] != next(iter(defaults)):
            problems.append(f"{name}: {ENV_HINT} says {listed[name]!r}, compose.yaml defaults to "
                            f"{next(iter(defaults))!r}")
    return problems


def check_variable_forms(stack: Stack) -> list[str]:
    """Secrets only in the required form ``${VAR:?message}`` whose message points at the
    example file; everything else with a default, so an unset setting is never blank."""
    problems = []
    for ref in var_refs(stack.interpolated_text):
        if ref.name.startswith("<invalid"):
            problems.append(f"invalid interpolation {ref.name}")
        elif is_secret_name(ref.name):
            if ref.op != ":?":
                problems.append(f"secret ${{{ref.name}}} must use the required form ${{{ref.name}:?...}}")
            elif ENV_HINT not in ref.arg:
                problems.append(f"${{{ref.name}:?...}}: the message should say to copy {ENV_HINT}")
        elif ref.op not in (":-", "-"):
            problems.append(f"setting ${{{ref.name}}} has no default (use ${{{ref.name}:-value}})")
    return problems


def check_no_literal_secrets(stack: Stack) -> list[str]:
    """No password, key or token written in compose.yaml: secret-named environment
    entries are one required reference, URL credentials are required references to
    secret variables, and redis gets its password from the environment."""
    problems = []
    for path, value in walk_strings(stack.doc):
        key = path.rsplit(".", 1)[-1]
        if ".environment." in path and is_secret_name(key) and not _REQUIRED_REF_RE.fullmatch(value):
            problems.append(f"{path}: literal value for a secret (use ${{VAR:?...}})")
        masked = mask_refs(value)
        for match in re.finditer(r"[a-z][a-z0-9+.-]*://([^/@\s]*)@", masked):
            user, sep, password = match.group(1).partition(":")
            if sep and not (password.startswith("<required:") and is_secret_name(password[10:-1])):
                problems.append(f"{path}: literal password in URL {match.group(0)!r}")
    for name, svc in stack.services().items():
        if re.search(r"--requirepass\s+(?![\"']?\$)", service_command(svc)):
            problems.append(f"service {name}: literal redis password")
    return problems


def check_depends_on(stack: Stack) -> list[str]:
    problems = []
    services = stack.services()
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for target, spec in items:
            if target not in services:
                problems.append(f"service {name}: depends_on unknown service {target!r}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"service {name}: waits for {target} healthy but {target} has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get("restart") not in ("no", None):
                problems.append(f"service {name}: waits for {target} to complete but {target} restarts")
            if condition not in ("service_started", "service_healthy", "service_completed_successfully"):
                problems.append(f"service {name}: unknown depends_on condition {condition!r}")
    return problems


def check_volumes(stack: Stack) -> list[str]:
    problems = []
    declared = set((stack.doc.get("volumes") or {}).keys())
    used = set()
    for name, svc in stack.services().items():
        for source, target in volume_mounts(svc):
            if is_named_volume(source):
                used.add(source)
                if source not in declared:
                    problems.append(f"service {name}: volume {source!r} is not declared under volumes:")
            elif source.startswith("."):
                if not (stack.compose_path.parent / source).exists():
                    problems.append(f"service {name}: bind mount source {source!r} does not exist")
            if not target.startswith("/"):
                problems.append(f"service {name}: mount target {target!r} is not absolute")
    problems += [f"volume {name!r} is declared but no service mounts it" for name in sorted(declared - used)]
    return problems


def check_healthchecks(stack: Stack, required: tuple[str, ...] = (
        "postgres", "redis", "mlflow", "airflow-apiserver")) -> list[str]:
    problems = []
    services = stack.services()
    for name in required:
        check = (services.get(name) or {}).get("healthcheck")
        if not check or not check.get("test"):
            problems.append(f"service {name}: no healthcheck")
    for name, svc in services.items():
        check = svc.get("healthcheck") or {}
        test = check.get("test")
        if test and isinstance(test, list) and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            problems.append(f"service {name}: healthcheck test must start with CMD or CMD-SHELL")
    return problems


def check_airflow_environment(stack: Stack) -> list[str]:
    """Each Airflow component is there, gets the whole shared environment, and the values
    that must agree between components (keys, URLs, queue) are the same everywhere."""
    problems = []
    services = airflow_services(stack)
    for component in AIRFLOW_COMPONENTS:
        if component_service(stack, component) is None:
            problems.append(f"no service runs `airflow {component}`")
    reference: dict[str, str] = {}
    for name, svc in services.items():
        env = environment(svc)
        for key in AIRFLOW_REQUIRED_ENV:
            if key not in env:
                problems.append(f"service {name}: {key} missing from its environment")
                continue
            reference.setdefault(key, env[key])
            if env[key] != reference[key]:
                problems.append(f"service {name}: {key} differs from the other Airflow services")
        if env.get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
            problems.append(f"service {name}: executor is not CeleryExecutor")
        if not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").startswith("postgresql"):
            problems.append(f"service {name}: metadata DB is not PostgreSQL")
        if not env.get("AIRFLOW__CELERY__BROKER_URL", "").startswith("redis://"):
            problems.append(f"service {name}: Celery broker is not Redis")
    return problems


def check_execution_api(stack: Stack) -> list[str]:
    """AIRFLOW__CORE__EXECUTION_API_SERVER_URL names the api-server service, the port its
    command listens on, the port its healthcheck probes and /execution/."""
    found = component_service(stack, "api-server")
    if found is None:
        return ["no api-server service"]
    api_name, api = found
    command = interpolate_defaults(service_command(api))
    port = option_value(command, "--port", "-p") or environment(api).get("AIRFLOW__API__PORT") or "8080"
    problems = []
    targets = []
    for entry in api.get("ports") or []:
        text = interpolate_defaults(str(entry if not isinstance(entry, dict) else entry.get("target")))
        targets.append(text.rsplit(":", 1)[-1].split("/")[0])
    if port not in targets:
        problems.append(f"{api_name} listens on {port} but publishes container ports {targets}")
    test = command_text((api.get("healthcheck") or {}).get("test"))
    if f":{port}/" not in test:
        problems.append(f"{api_name}: healthcheck does not probe port {port}")
    for name, svc in airflow_services(stack).items():
        url = environment(svc).get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "")
        parts = urlsplit(mask_refs(url))
        if parts.hostname != api_name or str(parts.port or 80) != port or parts.path != "/execution/":
            problems.append(f"service {name}: execution API URL {url!r} does not match "
                            f"http://{api_name}:{port}/execution/")
    return problems


def check_workers(stack: Stack) -> list[str]:
    """A CPU worker on `default`, a GPU worker on `gpu` with an NVIDIA reservation and
    the GPU image; the training queue is served."""
    problems = []
    workers = celery_workers(stack)
    gpu = workers.get("airflow-worker-gpu")
    cpu = workers.get("airflow-worker-cpu")
    if gpu is None:
        problems.append("gpu worker: airflow-worker-gpu does not run `airflow celery worker`")
    else:
        if "gpu" not in worker_queues(gpu):
            problems.append(f"gpu worker listens on {sorted(worker_queues(gpu))}, not on queue gpu")
        reservations = nvidia_reservations(gpu)
        if not reservations:
            problems.append("gpu worker reserves no nvidia device (deploy.resources.reservations.devices)")
        for device in reservations:
            if "gpu" not in (device.get("capabilities") or []):
                problems.append("gpu worker: nvidia reservation without capabilities [gpu]")
            if "count" in device and "device_ids" in device:
                problems.append("gpu worker: nvidia reservation sets both count and device_ids")
            if "count" not in device and "device_ids" not in device:
                problems.append("gpu worker: nvidia reservation sets neither count nor device_ids")
            if len(device.get("device_ids") or []) == 1:
                concurrency = option_value(interpolate_defaults(service_command(gpu)), "--concurrency", "-c")
                if concurrency != "1":
                    problems.append("gpu worker: one GPU but concurrency is not 1")
        if str((build_of(gpu) or {}).get("args", {}).get("EXTRAS")) != "gpu":
            problems.append("gpu worker: not built with EXTRAS=gpu")
        if not str(gpu.get("image", "")).endswith(":gpu"):
            problems.append("gpu worker: image tag is not :gpu")
    if cpu is None:
        problems.append("cpu worker: airflow-worker-cpu does not run `airflow celery worker`")
    else:
        if "default" not in worker_queues(cpu):
            problems.append(f"cpu worker listens on {sorted(worker_queues(cpu))}, not on queue default")
        if nvidia_reservations(cpu):
            problems.append("cpu worker reserves an nvidia device")
    for name, svc in stack.services().items():
        extras = str((build_of(svc) or {}).get("args", {}).get("EXTRAS", "cpu"))
        if name != "airflow-worker-gpu" and build_of(svc) is not None and extras != "cpu":
            problems.append(f"service {name}: built with EXTRAS={extras}, expected cpu")
    served = set().union(*(worker_queues(w) for w in workers.values())) if workers else set()
    for name, svc in airflow_services(stack).items():
        queue = interpolate_defaults(environment(svc).get("NNZOO_TRAINING_QUEUE", "default"))
        if queue not in served:
            problems.append(f"service {name}: training queue {queue!r} is served by no worker")
    return problems


def check_shared_data(stack: Stack) -> list[str]:
    """NNZOO_DATA_DIR lies on the same named volume in every worker."""
    problems = []
    volumes = {}
    for name, svc in celery_workers(stack).items():
        data_dir = environment(svc).get("NNZOO_DATA_DIR", "")
        holder = [source for source, target in volume_mounts(svc)
                  if is_named_volume(source) and (data_dir + "/").startswith(target.rstrip("/") + "/")]
        if not holder:
            problems.append(f"service {name}: NNZOO_DATA_DIR {data_dir!r} is not on a named volume")
        else:
            volumes[name] = holder[0]
    if len(set(volumes.values())) > 1:
        problems.append(f"workers keep NNZOO_DATA_DIR on different volumes: {volumes}")
    return problems


def check_airflow_init(stack: Stack) -> list[str]:
    svc = stack.services().get("airflow-init")
    if svc is None:
        return ["no airflow-init service"]
    command = service_command(svc)
    problems = []
    if "airflow db migrate" not in command:
        problems.append("airflow-init does not run `airflow db migrate`")
    # Without NNZOO_TRAINING_POOL the DAGs put training tasks in default_pool (any number
    # at once); with it, the pool must exist or Airflow never schedules them.
    pool = environment(svc).get("NNZOO_TRAINING_POOL")
    if not pool:
        problems.append("NNZOO_TRAINING_POOL is not set: training tasks would not be limited to one per GPU")
    match = re.search(r"airflow pools set\s+(\S+)\s+(\S+)", command)
    if match is None:
        problems.append("airflow-init does not create the training pool (`airflow pools set`)")
    else:
        name, slots = (part.strip("\"'") for part in match.groups())
        if name not in (pool, "$${NNZOO_TRAINING_POOL}", "$NNZOO_TRAINING_POOL"):
            problems.append(f"airflow-init creates pool {name!r}, the DAGs use {pool!r}")
        if "NNZOO_GPU_COUNT" not in slots:
            problems.append(f"airflow-init pool slots {slots!r} do not come from NNZOO_GPU_COUNT")
    if svc.get("restart") not in ("no", None):
        problems.append("airflow-init must not restart")
    return problems


def check_mlflow(stack: Stack) -> list[str]:
    """The tracking server: its start script is in the image, runs basic auth with an ini
    written from the environment, serves artifacts from a named volume, and the workers'
    MLFLOW_TRACKING_URI reaches it."""
    services = stack.services()
    svc = services.get("mlflow")
    if svc is None:
        return ["no mlflow service"]
    problems = []
    env = environment(svc)
    entry = service_command(svc)
    script_in_image = re.search(r"(/\S+\.sh)", entry)
    copies = {}
    for line in dockerfile_lines(stack.root / "docker" / "Dockerfile"):
        if line.upper().startswith("COPY "):
            parts = line.split()[1:]
            copies[parts[-1]] = parts[:-1]
    if script_in_image is None:
        problems.append("mlflow: entrypoint does not run a start script")
    else:
        path = script_in_image.group(1)
        if path not in copies:
            problems.append(f"mlflow: {path} is not copied into the image by docker/Dockerfile")
        else:
            script = stack.root / copies[path][0]
            lines = script.read_text().splitlines() if script.is_file() else []
            text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
            for needle in ("--app-name basic-auth", "MLFLOW_AUTH_CONFIG_PATH", "admin_password",
                           "--artifacts-destination", "MLFLOW_BACKEND_STORE_URI", "postgresql://"):
                if needle not in text:
                    problems.append(f"mlflow: {copies[path][0]} lacks {needle!r}")
    for key in ("MLFLOW_DB_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        if key not in env:
            problems.append(f"mlflow: {key} missing from its environment")
    destination = env.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if not any(is_named_volume(source) and destination.startswith(target) for source, target in volume_mounts(svc)):
        problems.append(f"mlflow: artifacts destination {destination!r} is not on a named volume")
    port = env.get("MLFLOW_SERVER_PORT", "5000")
    if f":{port}/" not in command_text((svc.get("healthcheck") or {}).get("test")):
        problems.append(f"mlflow: healthcheck does not probe port {port}")
    for name, other in airflow_services(stack).items():
        uri = urlsplit(mask_refs(environment(other).get("MLFLOW_TRACKING_URI", "")))
        if uri.hostname != "mlflow" or str(uri.port) != port:
            problems.append(f"service {name}: MLFLOW_TRACKING_URI does not point at http://mlflow:{port}")
    return problems


def check_postgres_init(stack: Stack) -> list[str]:
    """The init scripts mounted into postgres create the databases and roles the
    connection URLs and the MLflow start script use."""
    svc = stack.services().get("postgres")
    if svc is None:
        return ["no postgres service"]
    mounts = [source for source, target in volume_mounts(svc) if target == "/docker-entrypoint-initdb.d"]
    if not mounts:
        return ["postgres: nothing mounted on /docker-entrypoint-initdb.d"]
    folder = stack.compose_path.parent / mounts[0]
    sql = " ".join(p.read_text() for p in sorted(folder.glob("*")) if p.suffix in (".sh", ".sql"))
    wanted = {"airflow", "mlflow", "mlflow_auth"}
    problems = [f"postgres init does not CREATE DATABASE {db}" for db in sorted(wanted)
                if not re.search(rf"CREATE DATABASE {db}\b", sql)]
    for name, other in airflow_services(stack).items():
        url = urlsplit(mask_refs(environment(other).get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")))
        if url.path.lstrip("/") not in wanted or not re.search(rf"CREATE ROLE {url.username}\b", sql):
            problems.append(f"service {name}: metadata DB {url.path!r} / role {url.username!r} not created")
            break
    env = environment(svc)
    for key in ("AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD"):
        if key not in env:
            problems.append(f"postgres: {key} missing (its init script creates the role with it)")
    return problems


def check_dockerfile(stack: Stack) -> list[str]:
    """FROM, the project installed with the cpu/gpu extra chosen by EXTRAS (+ distributed),
    extras that exist in pyproject.toml, an `airflow` entry point, a non-root user, and
    no secrets or stores copied in."""
    path = stack.root / "docker" / "Dockerfile"
    lines = dockerfile_lines(path)
    problems = []
    if not any(line.upper().startswith("FROM ") for line in lines):
        problems.append("Dockerfile: no FROM")
    extras = stack.pyproject_extras()
    args = {}
    for line in lines:
        if line.upper().startswith("ARG "):
            name, _, default = line[4:].strip().partition("=")
            args[name] = default
    if args.get("EXTRAS") != "cpu":
        problems.append(f"Dockerfile: ARG EXTRAS should default to cpu, not {args.get('EXTRAS')!r}")
    installs = [line for line in lines if re.search(r"pip install", line)]
    specs = [m.group(1) for line in installs for m in re.finditer(r"\.\[([^\]]*)\]", line)]
    if not specs:
        problems.append("Dockerfile: the project is not pip-installed with extras (.[...])")
    for spec in specs:
        parts = [part.strip() for part in spec.split(",")]
        if "${EXTRAS}" not in parts and "$EXTRAS" not in parts:
            problems.append(f"Dockerfile: pip install .[{spec}] ignores the EXTRAS build arg")
        if "distributed" not in parts:
            problems.append(f"Dockerfile: pip install .[{spec}] lacks the distributed extra (Celery, Postgres)")
        for part in parts:
            if not part.startswith("$") and part not in extras:
                problems.append(f"Dockerfile: extra {part!r} is not an extra of pyproject.toml")
    auth_in_image = any("mlflow[auth]" in line for line in installs) or any(
        dep.lower().replace(" ", "").startswith(("mlflow[auth]", "flask-wtf")) for dep in extras.get("distributed", []))
    if not auth_in_image:
        problems.append("Dockerfile: mlflow[auth] (Flask-WTF) is not installed; MLflow basic auth needs it")
    for flavour, package in (("cpu", "tensorflow-cpu"), ("gpu", "tensorflow[and-cuda]")):
        if not any(dep.startswith(package) for dep in extras.get(flavour, [])):
            problems.append(f"pyproject.toml: extra {flavour!r} does not install {package}")
    entrypoints = [line for line in lines if line.upper().startswith("ENTRYPOINT")]
    if not entrypoints or '"airflow"' not in entrypoints[-1]:
        problems.append("Dockerfile: the entry point is not the airflow command")
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    if not users or users[-1] in ("root", "0"):
        problems.append("Dockerfile: runs as root")
    for line in lines:
        keyword = line.split()[0].upper()
        if keyword in ("COPY", "ADD"):
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            problems += [f"Dockerfile: {keyword} {source} copies secrets, stores or the whole context"
                         for source in sources if source in FORBIDDEN_COPY_SOURCES]
            problems += [f"Dockerfile: {keyword} source {source} does not exist"
                         for source in sources if not (stack.root / source).exists()]
        if keyword in ("ENV", "ARG"):
            for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)", line):
                if is_secret_name(name) and value:
                    problems.append(f"Dockerfile: {keyword} {name} bakes a secret into the image")
    return problems


def check_shell_scripts(stack: Stack) -> list[str]:
    """The scripts the stack runs parse (``sh -n`` / ``bash -n``)."""
    problems = []
    scripts = [stack.root / "docker" / "mlflow-server.sh", *sorted((stack.root / "docker" / "postgres-init").glob("*.sh"))]
    for script in scripts:
        if not script.is_file():
            problems.append(f"{script.name}: missing")
            continue
        shell = "bash" if script.read_text().startswith("#!/bin/bash") else "sh"
        result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        if result.returncode != 0:
            problems.append(f"{script.name}: syntax error: {result.stderr.strip()}")
    return problems


MIN_VISIBILITY_TIMEOUT_S = 6 * 3600
"""Below this, a long training on a GPU may outlive the broker's visibility timeout."""


def check_celery_visibility_timeout(stack: Stack) -> list[str]:
    """Every Airflow service sets the Redis broker's visibility timeout explicitly, to one
    value, longer than a long training (docs/distributed.md, "Long tasks")."""
    problems = []
    key = "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"
    values = {}
    for name, svc in airflow_services(stack).items():
        value = environment(svc).get(key)
        if value is None:
            problems.append(f"service {name}: {key} is not set")
            continue
        values[name] = str(value)
        if not str(value).isdigit() or int(value) < MIN_VISIBILITY_TIMEOUT_S:
            problems.append(f"service {name}: {key}={value!r}: expected whole seconds >= {MIN_VISIBILITY_TIMEOUT_S}")
    if len(set(values.values())) > 1:
        problems.append(f"{key} differs between Airflow services: {values}")
    return problems


ALL_CHECKS = (
    check_top_level, check_images_and_builds, check_env_example, check_variable_forms,
    check_no_literal_secrets, check_depends_on, check_volumes, check_healthchecks,
    check_airflow_environment, check_execution_api, check_workers, check_shared_data,
    check_airflow_init, check_celery_visibility_timeout, check_mlflow, check_postgres_init, check_dockerfile,
    check_shell_scripts,
)


def all_problems(stack: Stack) -> list[str]:
    return [problem for check in ALL_CHECKS for problem in check(stack)]


def is_git_ignored(repo: Path, relative: str) -> bool:
    result = subprocess.run(["git", "check-ignore", "-q", relative], cwd=repo, capture_output=True)
    return result.returncode == 0
