"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine needed): the structure, every command
against the real CLI, every variable against the settings that read it, and every service the code needs."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SETTINGS_MODULES = ("coordinator.settings", "barfed.settings", "contributor_node.settings")
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}
SHELL_WORDS = {"if", "then", "else", "elif", "fi", "exec", "!", "until", "while", "do", "done", "{", "}"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}


# -- reading the compose file --------------------------------------------------------------------------------------


def dockerfile_instruction(name: str) -> list[str]:
    lines = [line for line in DOCKERFILE.splitlines() if line.upper().startswith(name + " ")]
    assert lines, f"Dockerfile has no {name}"
    return lines


def dockerfile_entrypoint() -> list[str]:
    return json.loads(dockerfile_instruction("ENTRYPOINT")[-1].split(None, 1)[1])


def builds_here(service: dict) -> bool:
    build = service.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    return context in (".", "./")


def words(value) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value or []]


def argv(service: dict) -> list[str]:
    """What the container runs: its entrypoint (the Dockerfile's for this image unless overridden) + command."""
    if "entrypoint" in service:
        entry = words(service["entrypoint"])
    else:
        entry = dockerfile_entrypoint() if builds_here(service) else []
    return entry + words(service.get("command"))


def script_commands(script: str) -> list[list[str]]:
    """The simple commands of a POSIX sh script: separators split them, keywords and VAR=value prefixes drop."""
    script = script.replace("$$", "$").replace("\\\n", " ")
    commands = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                while current and (current[0] in SHELL_WORDS or re.fullmatch(r"\w+=.*", current[0])):
                    current.pop(0)
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return [[t for t in _until_redirect(c)] for c in commands]


def _until_redirect(command: list[str]) -> list[str]:
    for i, token in enumerate(command):
        if set(token) <= set("<>&") or re.fullmatch(r"\d*[<>].*", token):
            return command[:i]
    return command


def commands_of(argv_: list[str]) -> list[list[str]]:
    if len(argv_) >= 3 and argv_[0] in SHELLS and argv_[1].startswith("-") and "c" in argv_[1]:
        return script_commands(argv_[2])
    return [[a.replace("$$", "$") for a in argv_]] if argv_ else []


def healthcheck_commands(service: dict) -> list[list[str]]:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, str):
        return script_commands(test)
    if not test or test[0] == "NONE":
        return []
    if test[0] == "CMD-SHELL":
        return script_commands(test[1])
    return commands_of(test[1:] if test[0] == "CMD" else test)


def all_commands() -> list[tuple[str, list[str]]]:
    found = []
    for name, service in SERVICES.items():
        found += [(name, c) for c in commands_of(argv(service))]
        found += [(f"{name} (healthcheck)", c) for c in healthcheck_commands(service)]
    return found


def one_shot(name: str) -> bool:
    return any(
        isinstance(s.get("depends_on"), dict)
        and (s["depends_on"].get(name) or {}).get("condition") == "service_completed_successfully"
        for s in SERVICES.values()
    )


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def named_volumes(service: dict) -> dict[str, str]:
    """{volume: target} for named volumes; bind mounts (paths, ${VAR}) are not named volumes."""
    out = {}
    for volume in service.get("volumes") or []:
        source, target = (volume.get("source"), volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        if source and not source.startswith((".", "/", "~", "$")):
            out[source] = target
    return out


def secret_sources(service: dict) -> list[str]:
    return [s if isinstance(s, str) else s["source"] for s in service.get("secrets") or []]


def secret_targets(service: dict) -> set[str]:
    return {s if isinstance(s, str) else s.get("target", s["source"]) for s in service.get("secrets") or []}


def depends(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    return (
        {d: "service_started" for d in deps}
        if isinstance(deps, list)
        else {d: (v or {}).get("condition", "service_started") for d, v in deps.items()}
    )


def services_with_image(prefix: str) -> list[str]:
    return [n for n, s in SERVICES.items() if str(s.get("image", "")).split(":")[0].split("/")[-1] == prefix]


def coordinator_services() -> list[str]:
    return [n for n, s in SERVICES.items() if any(k.startswith("BARFED_COORD_") for k in environment(s))]


# -- the CLI and the settings ----------------------------------------------------------------------------------------


def cli_root():
    import typer

    from barfed.cli import app

    return typer.main.get_command(app)


def is_group(cmd) -> bool:  # typer may carry its own copy of click: no isinstance on click's classes
    return hasattr(cmd, "commands")


def cli_problem(root, command: list[str]) -> str | None:
    """None when ``command`` (barfed …) names a real command with options and arguments it takes."""
    cmd, path, tokens = root, ["barfed"], list(command[1:])
    while True:
        options = {o: p for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}
        arguments = [p for p in cmd.params if p.param_type_name == "argument"]
        positional = []
        while tokens and (tokens[0].startswith("-") or not is_group(cmd)):
            token = tokens.pop(0)
            if not token.startswith("-") or token == "-":
                positional.append(token)
                continue
            name = token.split("=", 1)[0]
            if name not in options and name != "--help":
                return f"`{' '.join(path)}` has no option {name}"
            option = options.get(name)
            if option is not None and not (option.is_flag or option.count) and "=" not in token:
                if not tokens:
                    return f"`{' '.join(path)} {name}` needs a value"
                tokens.pop(0)
        if not is_group(cmd):
            break
        if not tokens:
            return f"`{' '.join(path)}` needs a command"
        name = tokens.pop(0)
        sub = cmd.commands.get(name)
        if sub is None:
            return f"`{' '.join(path)}` has no command {name!r} (has: {', '.join(sorted(cmd.commands))})"
        cmd, path = sub, [*path, name]
    if not any(a.nargs == -1 for a in arguments) and len(positional) > sum(a.nargs for a in arguments):
        return f"`{' '.join(path)}` takes {sum(a.nargs for a in arguments)} arguments, given {positional}"
    missing = [a.name for a in arguments if a.required][len(positional) :]
    return f"`{' '.join(path)}` needs {missing}" if missing else None


def settings_classes() -> dict[str, type]:
    """{env prefix: settings class} for every settings module that exists."""
    from pydantic_settings import BaseSettings

    out = {}
    for module_name in SETTINGS_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseSettings) and value.__module__ == module_name:
                out[value.model_config.get("env_prefix", "")] = value
    return out


def variables_read_directly() -> set[str]:
    """Variables the settings modules read themselves (config file names, the secrets directory)."""
    names = set()
    for module_name in SETTINGS_MODULES:
        path = ROOT / (module_name.replace(".", "/") + ".py")
        if path.exists():
            names |= set(re.findall(r"os\.(?:environ\.get\(|getenv\(|environ\[)\s*[\"'](BARFED_\w+)", path.read_text()))
    return names


def variable_problem(name: str, classes: dict[str, type], direct: set[str]) -> str | None:
    if name in direct:
        return None
    if name.startswith("BARFED_NODE_") and "BARFED_NODE_" not in classes:
        return f"{name}: contributor_node/settings.py (NodeSettings) does not exist"
    prefix = max((p for p in classes if name.startswith(p)), key=len, default=None)
    if prefix is None:
        return f"{name}: no settings class reads the prefix"
    field = name[len(prefix) :].lower()
    if field not in classes[prefix].model_fields:
        return f"{name}: {classes[prefix].__name__} has no field {field!r}"
    return None


# -- structure -------------------------------------------------------------------------------------------------------


def test_every_service_has_an_image_or_a_build_and_every_long_running_one_a_healthcheck():
    assert SERVICES
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"
        if one_shot(name):
            assert service.get("restart", "no") == "no", f"one-shot {name} must not restart"
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"] and not (service.get("healthcheck") or {}).get("disable"), (
            f"long-running {name} has no healthcheck"
        )


def test_volumes_secrets_and_dependencies_referenced_are_declared_and_used():
    declared_volumes, declared_secrets = set(COMPOSE.get("volumes") or {}), set(COMPOSE.get("secrets") or {})
    used_volumes, used_secrets = set(), set()
    for name, service in SERVICES.items():
        used_volumes |= set(named_volumes(service))
        used_secrets |= set(secret_sources(service))
        for target in depends(service):
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            assert target != name
    assert used_volumes <= declared_volumes, f"undeclared volumes: {used_volumes - declared_volumes}"
    assert used_secrets <= declared_secrets, f"undeclared secrets: {used_secrets - declared_secrets}"
    assert declared_volumes <= used_volumes, f"volumes nobody mounts: {declared_volumes - used_volumes}"
    assert declared_secrets <= used_secrets, f"secrets nobody reads: {declared_secrets - used_secrets}"
    for secret, spec in COMPOSE["secrets"].items():
        assert "file" in spec, f"secret {secret} is not a file"


def test_no_password_is_written_in_the_compose_file():
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            assert "PASSWORD" not in key or key.endswith("_FILE"), f"{name}: {key} in plain text"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{name}: {key} carries a password"


# -- commands --------------------------------------------------------------------------------------------------------

COMMANDS = all_commands()


def test_the_compose_file_runs_barfed_and_celery():
    programs = {command[0] for _, command in COMMANDS}
    assert {"barfed", "celery"} <= programs


@pytest.mark.parametrize(
    "service,command",
    [(s, c) for s, c in COMMANDS if c[0] == "barfed"],
    ids=[
        f"{s}: {' '.join(t for t in c if not t.startswith(('-', '$', '/')))[:60]}"
        for s, c in COMMANDS
        if c[0] == "barfed"
    ],
)
def test_every_barfed_command_is_a_real_cli_entry(service, command):
    problem = cli_problem(cli_root(), command)
    assert problem is None, f"{service}: {problem}"


def test_the_celery_commands_name_the_real_app(tmp_path):
    """Resolved as `celery -A` resolves it, in a fresh process."""
    from coordinator.tasks.dispatch import TASK_NAME

    celery_commands = [(s, c) for s, c in COMMANDS if c[0] == "celery"]
    modules = set()
    for service, command in celery_commands:
        assert "-A" in command, f"{service}: celery without -A"
        modules.add(command[command.index("-A") + 1])
        assert "-Q" not in command, f"{service}: the queue is task_queue's (the app's default queue)"
    assert any(c[c.index("-A") + 2 :][:1] == ["worker"] for _, c in celery_commands)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARFED_")}
    env |= {"BARFED_COORD_HOME": str(tmp_path), "BARFED_COORD_BROKER_URL": "redis://127.0.0.1:1/0"}  # not dialled
    for module in modules:
        check = f"from celery.app.utils import find_app; app = find_app({module!r}); print({TASK_NAME!r} in app.tasks)"
        out = subprocess.run(
            [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr[-2000:]
    worker = next(c for _, c in celery_commands if "worker" in c)
    ping = next(c for _, c in celery_commands if "ping" in c)
    hostname = worker[worker.index("--hostname") + 1].split("@")[0]
    assert ping[ping.index("--destination") + 1].split("@")[0] == hostname


# -- variables and the services they need ---------------------------------------------------------------------------


def test_every_barfed_variable_is_one_the_settings_read():
    classes, direct = settings_classes(), variables_read_directly()
    assert {"BARFED_", "BARFED_COORD_"} <= set(classes)
    problems = [
        f"{name}: {problem}"
        for name, service in SERVICES.items()
        for variable in environment(service)
        if variable.startswith("BARFED_") and (problem := variable_problem(variable, classes, direct))
    ]
    assert not problems, problems


def coordinator_settings(service: dict, tmp_path: Path, monkeypatch):
    """The service's CoordinatorSettings, with its secret files replaced by README's examples."""
    from coordinator.settings import CoordinatorSettings

    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for target in secret_targets(service):
        if target.startswith("barfed_coord_"):
            (secrets / target).write_text(readme_database_url() + "\n")
    monkeypatch.chdir(tmp_path)
    for variable, value in environment(service).items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("BARFED_COORD_SECRETS_DIR", str(secrets))
    return CoordinatorSettings()


def readme_database_url() -> str:
    urls = re.findall(r"postgresql\+psycopg://[^\s'\"`]+", (ROOT / "README.md").read_text())
    urls = [u for u in urls if "@postgres" in u or any(f"@{s}:" in u for s in SERVICES)]
    assert urls, "README shows no database URL for the compose file's database"
    return urls[0]


def test_the_settings_accept_the_values_and_every_service_they_name_is_there(tmp_path, monkeypatch):
    from barfed.settings import Settings

    names = coordinator_services()
    assert {"init", "coordinator", "worker"} <= set(names)
    for name in names:
        service = SERVICES[name]
        settings = coordinator_settings(service, tmp_path, monkeypatch)
        Settings()  # BARFED_* (log format, …) parse
        assert settings.database_url, f"{name} has no database_url (sqlite under a container's home)"
        url = settings.database_url
        host, _port, database = re.search(r"@([\w.-]+):(\d+)/(\w+)", url).groups()
        assert url.startswith("postgresql"), url
        assert host in services_with_image("postgres"), f"{name}: no PostgreSQL service {host}"
        assert environment(SERVICES[host]).get("POSTGRES_DB") == database
        assert "POSTGRES_PASSWORD_FILE" in environment(SERVICES[host])
        assert depends(service).get(host) == "service_healthy", f"{name} must wait for {host}"
        for redis_url in (settings.broker_url, settings.announce_redis_url):
            if redis_url and redis_url.startswith("redis://"):
                redis_host = re.match(r"redis://(?:[^@/]*@)?([\w.-]+)", redis_url).group(1)
                assert redis_host in services_with_image("redis"), f"{name}: no Redis service {redis_host}"
                if not one_shot(name):  # init migrates and makes keys: no broker
                    assert depends(service).get(redis_host) == "service_healthy", f"{name} must wait for {redis_host}"
        if settings.artifact_store:  # releases on the S3 service: it is there, and what publishes waits for it
            s3_host = re.match(r"https?://([\w.-]+)", settings.s3_endpoint_url).group(1)
            assert s3_host in services_with_image("seaweedfs"), f"{name}: no SeaweedFS service {s3_host}"
            assert settings.s3_credentials_file.name in secret_targets(service)
            if not one_shot(name):
                assert depends(service).get(s3_host) == "service_healthy", f"{name} must wait for {s3_host}"
        monkeypatch.undo()


def test_the_coordinator_serves_with_workers_that_share_its_settings_but_no_volume(tmp_path, monkeypatch):
    coordinator, worker = SERVICES["coordinator"], SERVICES["worker"]
    assert argv(coordinator)[:4] == ["barfed", "coordinator", "serve", "--no-worker"]
    assert argv(worker)[:4] == ["celery", "-A", "coordinator.tasks.celery_app", "worker"]
    same = ("HOME", "BROKER_URL", "SECRETS_DIR", "DATABASE_URL", "HOSTNAMES")
    for key in same:
        variable = f"BARFED_COORD_{key}"
        assert environment(coordinator).get(variable) == environment(worker).get(variable), variable
    assert secret_targets(coordinator) == secret_targets(worker)
    assert depends(coordinator).get("init") == "service_completed_successfully"
    settings = coordinator_settings(coordinator, tmp_path, monkeypatch)
    # workers on any machine: artifacts on the store, nothing mounted in common with the coordinator but what
    # init wrote for them, the release key pair, where their home keeps its keys
    assert settings.artifact_store
    assert not set(named_volumes(coordinator)) & set(named_volumes(worker))
    assert named_volumes(worker) == {"release-keys": str(settings.pki_dir)}
    assert "release-keys" in named_volumes(SERVICES["init"])
    assert "release.key" in " ".join(argv(SERVICES["init"]))
    home = str(settings.home)
    mounted = set(named_volumes(coordinator).values())
    assert home in mounted and str(settings.releases_dir) in mounted, "home and releases must live on volumes"
    # everything the coordinator listens on is published, and what nodes dial is named in its certificate
    ports = {str(p).split(":")[-1] for p in coordinator.get("ports", [])}
    for listen in (settings.listen, settings.enroll_listen, settings.api_listen):
        assert listen.startswith("0.0.0.0:"), f"{listen} is unreachable from other containers"
        assert listen.rsplit(":", 1)[1] in ports
    listening = {settings.listen.rsplit(":", 1)[1], settings.enroll_listen.rsplit(":", 1)[1]}
    for name, command in COMMANDS:
        for host, port in re.findall(r"\b([a-z][\w-]*):(\d{2,5})\b", " ".join(command)):
            if host == "coordinator":
                assert port in listening, f"{name} dials {host}:{port}"
                assert host in settings.hostnames, f"{host} is not in the server certificate's names"
    init = SERVICES["init"]
    for variable in ("BARFED_COORD_HOME", "BARFED_COORD_HOSTNAMES", "BARFED_COORD_SECRETS_DIR"):
        assert environment(init).get(variable) == environment(coordinator).get(variable), variable
    assert set(named_volumes(coordinator).items()) <= set(named_volumes(init).items())


def test_nodes_wait_for_the_coordinator_and_read_its_ca_from_the_public_volume():
    nodes = [n for n, s in SERVICES.items() if any(c[:2] == ["barfed", "node"] for c in commands_of(argv(s)))]
    assert len(nodes) >= 2
    for name in nodes:
        service = SERVICES[name]
        assert depends(service).get("coordinator") == "service_healthy"
        assert "coordinator-home" not in named_volumes(service), f"{name} must not see the coordinator's keys"
        mounts = [v for v in service["volumes"] if isinstance(v, str)]
        assert any(v.startswith("public:") and v.endswith(":ro") for v in mounts), mounts
        assert secret_targets(service), f"{name} has no token secret"


# -- the Dockerfile --------------------------------------------------------------------------------------------------


PROJECT_INSTALL = re.search(r"pip install [^\n]*?\"?\.(?:\[([\w,-]+)\])?\"?\s*$", DOCKERFILE, re.M)


def test_the_dockerfile_builds_what_the_compose_file_runs():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert dockerfile_instruction("FROM")[0].split()[1] == "python:3.11-slim"
    args = {
        line.split()[1].split("=")[0]: line.split("=", 1)[1] if "=" in line else ""
        for line in dockerfile_instruction("ARG")
    }
    assert args["TORCH_INDEX"].endswith("/whl/cpu"), "CPU-only torch by default"
    makefile_torch = re.search(r"^TORCH \?= (\S+)", (ROOT / "Makefile").read_text(), re.M)
    if makefile_torch:
        assert args["TORCH"] == makefile_torch.group(1), "the image pins the torch the Makefile pins"
    user = dockerfile_instruction("USER")[-1].split()[1]
    assert user not in ("root", "0")
    entry = dockerfile_entrypoint()
    assert entry == ["barfed"] and "barfed" in pyproject["project"]["scripts"]
    assert PROJECT_INSTALL, "the project itself is pip-installed"
    copied = {line.split()[1].rstrip("/") for line in dockerfile_instruction("COPY")}
    copied |= {w for line in dockerfile_instruction("COPY") for w in line.split()[1:-1]}
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"Dockerfile does not copy {pattern}"
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".barfed", ".git"} <= ignored
    assert not ignored & ({"pyproject.toml", "README.md"} | copied)
    for name, service in SERVICES.items():
        if not builds_here(service) and service.get("image") != SERVICES["coordinator"].get("image"):
            continue
        assert set((service.get("build") or {}).get("args", {})) <= set(args), f"{name}: unknown build args"
        for target in named_volumes(service).values():
            assert target in DOCKERFILE, f"{name}: the image does not create {target} for its user"


def test_the_image_installs_the_extras_of_every_command_the_compose_file_runs():
    """One image runs every service, so it holds each role's extra (pyproject.toml), as `barfed` checks them."""
    from barfed.cli import COMMAND_EXTRAS

    installed = set((PROJECT_INSTALL.group(1) or "").split(",")) if PROJECT_INSTALL else set()
    needed = {"coordinator"} if any(c[0] == "celery" for _, c in COMMANDS) else set()
    for _, command in COMMANDS:
        if command[0] == "barfed":
            group = next(word for word in command[1:] if not word.startswith("-"))
            needed |= set(COMMAND_EXTRAS.get(group, ()))
    assert needed == {"node", "coordinator"} and needed <= installed, f"the image installs {installed or 'no extra'}"


# -- secrets by file -------------------------------------------------------------------------------------------------


def test_coordinator_settings_read_secret_files_and_env_wins(tmp_path, monkeypatch):
    from coordinator.settings import CoordinatorSettings

    monkeypatch.chdir(tmp_path)
    for variable in ("BARFED_COORD_DATABASE_URL", "BARFED_COORDINATOR_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / "barfed_coord_database_url").write_text("postgresql+psycopg://barfed:s3cret@db:5432/barfed\n")
    (tmp_path / "coordinator.toml").write_text('database_url = "sqlite:///from-toml.db"\nauto_build = false\n')
    monkeypatch.setenv("BARFED_COORD_SECRETS_DIR", str(secrets))
    settings = CoordinatorSettings()
    assert settings.database_url == "postgresql+psycopg://barfed:s3cret@db:5432/barfed"  # file over TOML
    assert settings.auto_build is False  # the TOML still applies to what no file names
    monkeypatch.setenv("BARFED_COORD_DATABASE_URL", "postgresql+psycopg://barfed:env@db:5432/barfed")
    assert CoordinatorSettings().database_url.endswith(":env@db:5432/barfed")  # env over file


def test_without_a_secrets_directory_nothing_is_read_and_nothing_warns(tmp_path, monkeypatch):
    import coordinator.settings
    from coordinator.settings import CoordinatorSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BARFED_COORD_SECRETS_DIR", raising=False)
    monkeypatch.delenv("BARFED_COORD_DATABASE_URL", raising=False)
    monkeypatch.setattr(coordinator.settings, "SECRETS_DIR", tmp_path / "no-such-dir")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CoordinatorSettings().database_url is None
    default = tmp_path / "run-secrets"
    default.mkdir()
    (default / "barfed_coord_database_url").write_text("postgresql+psycopg://u:p@db:5432/x")
    monkeypatch.setattr(coordinator.settings, "SECRETS_DIR", default)
    assert CoordinatorSettings().database_url == "postgresql+psycopg://u:p@db:5432/x"
