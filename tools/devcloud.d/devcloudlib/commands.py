"""The subcommands: install, start, status, stop, wipe, restart.

``start`` in order: venv + shared RabbitMQ/MariaDB; if the devcloud is
already healthy, rewrite the output files and return (warm start); else
initialise when needed (fresh databases, vhost, DB syncs, Keystone bootstrap,
Nova cells), launch every daemon not running, seed Keystone, start
nova-compute only once nova-conductor consumes its queue, wait for the
compute host to be up and mapped, seed flavors/image, and finally boot and
delete a real server as the demo user.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import threading
import time
from typing import Any, Dict, List

from . import configs, infra, installer, outputs, procs
from .services import BY_NAME, SERVICES, Service
from .settings import ADMIN, REGION, SUPPORT_DIR, Settings
from .util import DevcloudError, phase, port_open, run, say, wait_for

STOP_TIMEOUT = 10.0
# The queue a Nova back-end service consumes once it serves (nova-compute's is named after its host).
READY_QUEUE = {"nova-conductor": "conductor", "nova-scheduler": "scheduler"}


# ------------------------------------------------------------------ helpers

def _sync_lib(settings: Settings) -> None:
    """Copy the WSGI entry modules, cloud scripts and the virt driver under <base>/lib (and the
    driver into the venv's nova.virt), so the running services never depend on a repository
    checkout that may move."""
    for folder in ("wsgi", "cloud", "virt"):
        shutil.copytree(os.path.join(SUPPORT_DIR, folder), os.path.join(settings.lib, folder),
                        dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Nova loads its compute driver from the nova.virt package only
    for package in glob.glob(os.path.join(settings.venv, "lib", "python3*", "site-packages", "nova", "virt")):
        shutil.copy(os.path.join(settings.lib, "virt", "devcloud_virt.py"), package)


def cloudctl(settings: Settings, *actions: str, timeout: float = 300) -> Dict[str, Any]:
    """Run cloud-side actions with the venv's python (the OpenStack clients live there, not in
    the system python that runs this tool); returns their JSON result. Their progress goes to
    logs/cloudctl.log."""
    log = os.path.join(settings.logs, "cloudctl.log")
    os.makedirs(settings.logs, exist_ok=True)
    script = os.path.join(settings.lib, "cloud", "cloudctl.py")
    named = " ".join(actions)
    with open(log, "ab") as progress:
        progress.write(f"\n===== {time.strftime('%H:%M:%S')} cloudctl {named}\n".encode())
        progress.flush()
        try:
            completed = subprocess.run([settings.venv_bin("python"), script, settings.cloud_params_file, *actions],
                                       stdout=subprocess.PIPE, stderr=progress, stdin=subprocess.DEVNULL,
                                       timeout=timeout, cwd=os.path.join(settings.lib, "cloud"),
                                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        except subprocess.TimeoutExpired:
            raise DevcloudError(f"cloudctl {named} timed out after {int(timeout)}s", log)
    if completed.returncode != 0:
        raise DevcloudError(f"cloudctl {named} failed", log)
    lines = completed.stdout.decode().strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _cloud_result_path(settings: Settings) -> str:
    return os.path.join(settings.data, "cloud-result.json")


def _load_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _save_json(path: str, content: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        json.dump(content, handle, indent=2)
    os.replace(path + ".tmp", path)


def _wait_queue_consumer(settings: Settings, queue: str, service: Service, timeout: float = 90) -> None:
    """Wait until ``queue`` in the devcloud vhost has a consumer (the service
    behind it is connected to RabbitMQ and serving)."""
    wait_for(lambda: infra.queue_consumers(settings).get(queue, 0) > 0, timeout,
             f"{service.name} consuming queue {queue!r}", log=service.logfile(settings),
             interval=0.5, alive=lambda: service.running(settings))


def _wait_api(settings: Settings, service: Service, timeout: float = 180) -> None:
    wait_for(lambda: service.healthy(settings), timeout,
             f"{service.name} answering on port {settings.ports[service.port_key]}",
             log=service.logfile(settings), interval=0.3, alive=lambda: service.running(settings))


def _check_port_free(settings: Settings, service: Service) -> None:
    if service.port_in_use(settings):
        option = service.port_key[:-len("_port")]
        raise DevcloudError(
            f"port {settings.ports[service.port_key]} ({service.name}) is already used by a process the "
            f"devcloud did not start; see `ss -ltnp`, or choose another port (--{option}-port / "
            f"DEVCLOUD_{option.upper()}_PORT)")


def _launch(settings: Settings, service: Service) -> bool:
    """Start the service unless it runs; returns whether it was started."""
    if service.running(settings):
        return False
    _check_port_free(settings, service)
    pid = service.start(settings)
    service.record_code(settings)
    say(f"launched {service.name:<15} pid {pid:<7} log {service.logfile(settings)}")
    return True


def _all_healthy(settings: Settings) -> bool:
    return all(service.healthy(settings) for service in SERVICES)


def _preflight_ports(settings: Settings) -> None:
    """Fail before any slow work when an API port is taken by someone else."""
    for service in SERVICES:
        if not service.running(settings):
            _check_port_free(settings, service)


def _initialized(settings: Settings) -> bool:
    return os.path.exists(settings.init_marker) and infra.databases_present(settings)


# --------------------------------------------------------------------- init

def _init_chains(settings: Settings) -> Dict[str, List[List[str]]]:
    """Commands that create schemas and bootstrap data, grouped in chains that
    are independent of each other (so they run in parallel)."""
    etc = settings.etc
    keystone_config = ["--config-file", os.path.join(etc, "keystone", "keystone.conf")]
    nova_config = ["--config-file", os.path.join(etc, "nova", "nova.conf")]
    keystone_manage, nova_manage = settings.venv_bin("keystone-manage"), settings.venv_bin("nova-manage")
    keystone_url = settings.url("keystone_port", "/v3/")
    return {
        "keystone": [
            [keystone_manage, *keystone_config, "db_sync"],
            [keystone_manage, *keystone_config, "fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
            [keystone_manage, *keystone_config, "credential_setup", "--keystone-user", "root",
             "--keystone-group", "root"],
            [keystone_manage, *keystone_config, "bootstrap", "--bootstrap-password", ADMIN["password"],
             "--bootstrap-username", ADMIN["username"],
             "--bootstrap-project-name", ADMIN["project_name"],
             "--bootstrap-region-id", REGION,
             "--bootstrap-admin-url", keystone_url, "--bootstrap-internal-url", keystone_url,
             "--bootstrap-public-url", keystone_url],
        ],
        "placement": [[settings.venv_bin("placement-manage"), "--config-file",
                       os.path.join(etc, "placement", "placement.conf"), "db", "sync"]],
        "glance": [[settings.venv_bin("glance-manage"), "--config-file",
                    os.path.join(etc, "glance", "glance-api.conf"), "db_sync"]],
        "nova": [
            [nova_manage, *nova_config, "api_db", "sync"],
            [nova_manage, *nova_config, "cell_v2", "map_cell0", "--database_connection",
             settings.db_url("nova_cell0")],
            [nova_manage, *nova_config, "cell_v2", "create_cell", "--name", "cell1"],
            [nova_manage, *nova_config, "db", "sync"],
        ],
    }


def _initialize(settings: Settings) -> None:
    """From nothing: fresh databases and vhost, empty data dir, schemas."""
    running = [service.pidfile(settings) for service in SERVICES if service.running(settings)]
    if running:
        say(f"stopping {len(running)} devcloud processes of the previous state")
        procs.stop_groups(running, STOP_TIMEOUT)
    with phase(f"init: drop+create databases {settings.db_prefix}*, reset vhost {settings.vhost!r}"):
        infra.recreate_databases(settings)
        infra.ensure_vhost(settings, reset=True)
        for folder in ("fernet-keys", "credential-keys", "glance", "nova"):
            shutil.rmtree(os.path.join(settings.data, folder), ignore_errors=True)
        for name in ("keystone-seeded.json", "cloud-result.json"):
            if os.path.exists(os.path.join(settings.data, name)):
                os.remove(os.path.join(settings.data, name))
        configs.write_all(settings)
    with phase("init: db syncs, keystone bootstrap, nova cells (parallel, logs/init-*.log)"):
        errors: List[DevcloudError] = []

        def chain(name: str, commands: List[List[str]]) -> None:
            log = os.path.join(settings.logs, f"init-{name}.log")
            if os.path.exists(log):
                os.remove(log)
            try:
                started = time.monotonic()
                for argv in commands:
                    run(argv, log=log, env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=settings.run)
                say(f"  init {name:<9} {time.monotonic() - started:.1f}s")
            except DevcloudError as error:
                errors.append(error)

        threads = [threading.Thread(target=chain, args=item) for item in _init_chains(settings).items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
    with open(settings.init_marker, "w") as handle:
        handle.write(time.strftime("%Y-%m-%dT%H:%M:%S\n"))


# -------------------------------------------------------------------- start

def _seed_keystone(settings: Settings, force: bool) -> None:
    """Seed Keystone unless it was seeded for this very catalog (seeding costs seconds)."""
    marker = os.path.join(settings.data, "keystone-seeded.json")
    # through JSON once so that it compares equal to what is read back
    wanted = json.loads(json.dumps({"catalog": settings.catalog, "auth_url": settings.auth_url}))
    if not force and _load_json(marker) == wanted:
        return
    with phase("seed keystone (projects, users, roles, catalog)"):
        cloudctl(settings, "seed-keystone")
    _save_json(marker, wanted)


def _prepare(settings: Settings) -> None:
    """Shared first steps of start/restart: venv, RabbitMQ, MariaDB, files."""
    installer.install_venv(settings)
    for folder in (settings.etc, settings.data, settings.logs, settings.run, settings.lib):
        os.makedirs(folder, exist_ok=True)
    infra.ensure_mariadb(settings)
    infra.ensure_rabbitmq(settings)
    _sync_lib(settings)


def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    """``start``: idempotent; returns once a server really boots (see the module docstring)."""
    started = time.monotonic()
    _preflight_ports(settings)
    with phase("prepare (venv, RabbitMQ, MariaDB)"):
        _prepare(settings)
    initialized = _initialized(settings)
    if initialized and _all_healthy(settings):
        try:
            cloudctl(settings, "health", timeout=60)
            healthy = True
        except DevcloudError:
            healthy = False
        if healthy and _relaunch_changed(settings):
            infra.limit_notification_queues(settings)  # a devcloud started before Nova notified
            with phase("seed nova/glance and boot+delete a smoke server as demo"):
                _save_json(_cloud_result_path(settings), cloudctl(settings, "seed-nova", "smoke"))
        if healthy:
            outputs.cloud_params(settings, _load_json(_cloud_result_path(settings)))
            outputs.write_all(settings, _load_json(_cloud_result_path(settings)))
            say(f"already running and healthy (warm start) in {time.monotonic() - started:.1f}s; "
                f"facts: {settings.facts_file}")
            return 0
    if not initialized:
        _initialize(settings)
    else:
        infra.ensure_vhost(settings)
        configs.write_all(settings)
    outputs.cloud_params(settings)

    with phase("launch keystone, placement, glance, neutron"):
        for name in ("keystone", "placement", "glance", "neutron"):
            _launch(settings, BY_NAME[name])
    with phase("wait for keystone"):
        _wait_api(settings, BY_NAME["keystone"])
    _seed_keystone(settings, force=not initialized)
    # the nova services authenticate as their service users (placement
    # reports) right at start-up: they come after the keystone seeding
    with phase("launch nova-conductor, nova-scheduler, nova-api"):
        for name in ("nova-conductor", "nova-scheduler", "nova-api"):
            _launch(settings, BY_NAME[name])
    compute = BY_NAME["nova-compute"]
    with phase("wait for nova-conductor on RabbitMQ, then launch nova-compute"):
        _wait_queue_consumer(settings, "conductor", BY_NAME["nova-conductor"])
        _launch(settings, compute)
    with phase("wait for the APIs (placement, glance, neutron, nova-api)"):
        for name in ("placement", "glance", "neutron", "nova-api"):
            _wait_api(settings, BY_NAME[name])
    with phase("wait for nova-compute: RPC consumer, host mapped in cell1"):
        _wait_queue_consumer(settings, f"compute.{settings.name}", compute)
        sql = f"SELECT host FROM `{settings.databases['nova_api']}`.host_mappings WHERE host='{settings.name}'"
        wait_for(lambda: bool(infra.mysql(settings, sql)), 120, f"host {settings.name!r} mapped to a cell",
                 log=os.path.join(settings.logs, "nova-scheduler.log"), interval=0.5,
                 alive=lambda: compute.running(settings))
    with phase("seed nova/glance (flavors, image, quota) and boot+delete a smoke server as demo"):
        result = cloudctl(settings, "seed-nova", "smoke")
    _save_json(_cloud_result_path(settings), result)
    outputs.cloud_params(settings, result)
    outputs.write_all(settings, result)
    say(f"devcloud is up in {time.monotonic() - started:.1f}s (smoke boot to ACTIVE "
        f"{result.get('smoke_boot_seconds', -1):.1f}s). Facts: {settings.facts_file}")
    say(f"plugin config: {settings.conf_file} (sections devcloud, devcloud_legacy); "
        f"clouds.yaml: {settings.clouds_yaml}")
    return 0


# ------------------------------------------------------------------ restart

def cmd_restart(settings: Settings, args: argparse.Namespace) -> int:
    """``restart SERVICE``: one service stopped and started, then the whole devcloud checked."""
    service = BY_NAME[args.service]
    started = time.monotonic()
    if not _initialized(settings):
        raise DevcloudError("the devcloud is not initialised; run `start` first")
    _prepare(settings)
    configs.write_all(settings)
    _relaunch(settings, service)
    with phase("health check (token, nova API, nova-compute up)"):
        cloudctl(settings, "health", timeout=120)
    say(f"restarted {service.name} in {time.monotonic() - started:.1f}s")
    return 0


def _relaunch(settings: Settings, service: Service) -> None:
    """Stop one service, start it again and wait until it serves."""
    with phase(f"stop {service.name}"):
        stopped = procs.stop_groups([service.pidfile(settings)], STOP_TIMEOUT)
        say(f"{service.name}: {stopped[service.pidfile(settings)]}")
    with phase(f"start {service.name}"):
        if service.name == "nova-compute":
            _wait_queue_consumer(settings, "conductor", BY_NAME["nova-conductor"])
        _launch(settings, service)
        if service.is_api:
            _wait_api(settings, service)
        elif service.name == "nova-compute":
            _wait_queue_consumer(settings, f"compute.{settings.name}", service)
        else:
            _wait_queue_consumer(settings, READY_QUEUE[service.name], service)


def _relaunch_changed(settings: Settings) -> bool:
    """Restart the services whose code or config changed since they started (the checkout moved
    on, e.g. a new Neutron stand-in): a warm ``start`` then serves what this checkout defines.
    Returns whether any was restarted."""
    configs.write_all(settings)
    changed = [service for service in SERVICES if service.code_changed(settings)]
    for service in changed:
        say(f"{service.name}: its code or configuration changed since it started")
        _relaunch(settings, service)
    return bool(changed)


# ------------------------------------------------------------- status/stop

def collect_status(settings: Settings) -> Dict[str, Any]:
    """What ``status`` shows (and prints as JSON with --json)."""
    services = {}
    for service in SERVICES:
        pid = procs.read_pidfile(service.pidfile(settings))
        alive = service.running(settings)
        up = service.healthy(settings) if alive else False
        services[service.name] = {
            "pid": pid if alive else None,
            "up": up,
            "state": "up" if up else ("starting/unhealthy" if alive else "down"),
            "rss_mb": round(procs.group_rss(pid) / 2**20, 1) if alive and pid else 0,
            "port": settings.ports[service.port_key] if service.is_api else None,
            "log": service.logfile(settings),
        }
    return {
        "base": settings.base,
        "initialized": os.path.exists(settings.init_marker),
        "healthy": all(entry["up"] for entry in services.values()),
        "services": services,
        "infra": infra.infra_status(settings),
        "total_rss_mb": round(sum(entry["rss_mb"] for entry in services.values()), 1),
        "facts": settings.facts_file if os.path.exists(settings.facts_file) else None,
    }


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """``status``: exit status 1 when anything is down, so scripts can test it."""
    status = collect_status(settings)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"devcloud at {settings.base} ({'initialized' if status['initialized'] else 'not initialized'})")
        print(f"{'SERVICE':<15} {'PID':<8} {'STATE':<19} {'RSS':>9} {'PORT':>6}  LOG")
        for name, entry in status["services"].items():
            print(f"{name:<15} {entry['pid'] or '-':<8} {entry['state']:<19} {entry['rss_mb']:7.1f}MB "
                  f"{entry['port'] or '-':>6}  {entry['log']}")
        print(f"{'total':<15} {'':<8} {'':<19} {status['total_rss_mb']:7.1f}MB")
        for name, entry in status["infra"].items():
            owner = "started by devcloud" if entry["started_by_devcloud"] else "shared (not ours)"
            print(f"{name:<15} {'':<8} {'up' if entry['up'] else 'down':<19} {'':>9} {entry['port']:>6}  {owner}")
    ok = status["healthy"] and all(entry["up"] for entry in status["infra"].values())
    return 0 if ok else 1


def cmd_stop(settings: Settings, args: argparse.Namespace, quiet: bool = False, stop_infra: bool = True) -> int:
    """``stop``: the devcloud's daemons; RabbitMQ/MariaDB only if the devcloud started them."""
    with phase("stop devcloud services"):
        pidfiles = [service.pidfile(settings) for service in reversed(SERVICES)]
        stopped = procs.stop_groups(pidfiles, STOP_TIMEOUT)
        for service in reversed(SERVICES):
            state = stopped.get(service.pidfile(settings))
            if state != "not running" or not quiet:
                say(f"  {service.name:<15} {state}")
    if stop_infra and not getattr(args, "keep_infra", False):
        infra.stop_mariadb_if_ours(settings)
        infra.stop_rabbitmq_if_ours(settings)
    return 0


def cmd_wipe(settings: Settings, args: argparse.Namespace) -> int:
    """``wipe``: stop, then remove the devcloud's databases, vhost and files."""
    # the databases and the vhost live in the shared servers: drop them while
    # those still run, and only then stop servers the devcloud itself started
    cmd_stop(settings, args, quiet=True, stop_infra=False)
    with phase(f"drop databases {settings.db_prefix}* and vhost {settings.vhost!r}"):
        if port_open(settings.ports["mysql_port"]):
            infra.drop_databases(settings)
        else:
            say("  MariaDB not running: databases not dropped (start re-creates them anyway)")
        if port_open(settings.ports["rabbit_port"]):
            infra.delete_vhost(settings)
        else:
            say("  RabbitMQ not running: vhost not deleted")
    if not getattr(args, "keep_infra", False):
        infra.stop_mariadb_if_ours(settings)
        infra.stop_rabbitmq_if_ours(settings)
    with phase(f"remove state under {settings.base}{' (including the venv)' if args.all else ''}"):
        names = ["etc", "data", "logs", "run", "lib", "cloudmanagers.conf", "clouds.yaml",
                 "devcloud.json"] + (["venv"] if args.all else [])
        for name in names:
            path = settings.path(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        if args.all:
            try:
                os.remove(settings.path(".lock"))
                os.rmdir(settings.base)
            except OSError:
                pass
    return 0


def cmd_install(settings: Settings, args: argparse.Namespace) -> int:
    """``install``: the venv (and missing Debian packages); a no-op when up to date."""
    with phase("install"):
        installer.install(settings, force=args.force)
    return 0
