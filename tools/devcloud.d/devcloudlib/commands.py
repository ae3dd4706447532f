"""The subcommands: install, start, status, stop, wipe, restart.

``start`` in order: venv + shared RabbitMQ/MariaDB; if the devcloud is
already healthy, rewrite the output files and return (warm start); else
initialise when needed (fresh databases, vhost, DB syncs, Keystone bootstrap,
Nova cells), launch every daemon not running, seed Keystone, start
nova-compute only once nova-conductor consumes its queue, wait for the
compute host to be up and mapped, seed flavors/image, and finally boot and
delete a real server as the demo user.
"""

import glob
import json
import os
import shutil
import subprocess
import threading
import time

from . import configs, infra, installer, outputs, procs
from . import settings as S
from .services import BY_NAME, SERVICES
from .util import DevcloudError, phase, port_open, run, say, wait_for

STOP_TIMEOUT = 10.0


# ------------------------------------------------------------------ helpers

def _sync_lib(st):
    """Copy the WSGI entry modules, cloud scripts and the virt driver under <base>/lib (and the
    driver into the venv's nova.virt), so the running services never depend on a repository
    checkout that may move."""
    for sub in ("wsgi", "cloud", "virt"):
        shutil.copytree(os.path.join(S.SUPPORT_DIR, sub), os.path.join(st.lib, sub),
                        dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Nova loads its compute driver from the nova.virt package only
    for package in glob.glob(os.path.join(st.venv, "lib", "python3*", "site-packages", "nova", "virt")):
        shutil.copy(os.path.join(st.lib, "virt", "devcloud_virt.py"), package)


def cloudctl(st, *actions, timeout=300):
    """Run cloud-side actions with the venv's python; returns their JSON result.
    Their progress goes to logs/cloudctl.log."""
    log = os.path.join(st.logs, "cloudctl.log")
    os.makedirs(st.logs, exist_ok=True)
    script = os.path.join(st.lib, "cloud", "cloudctl.py")
    with open(log, "ab") as err:
        err.write(("\n===== %s cloudctl %s\n" % (time.strftime("%H:%M:%S"), " ".join(actions))).encode())
        err.flush()
        try:
            cp = subprocess.run([st.venv_bin("python"), script, st.cloud_params_file] + list(actions),
                                stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.DEVNULL,
                                timeout=timeout, cwd=os.path.join(st.lib, "cloud"),
                                env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        except subprocess.TimeoutExpired:
            raise DevcloudError("cloudctl %s timed out after %ds" % (" ".join(actions), timeout), log)
    if cp.returncode != 0:
        raise DevcloudError("cloudctl %s failed" % " ".join(actions), log)
    lines = cp.stdout.decode().strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _cloud_result_path(st):
    return os.path.join(st.data, "cloud-result.json")


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _save_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def _wait_queue_consumer(st, queue, svc, timeout=90):
    """Wait until ``queue`` in the devcloud vhost has a consumer (the service
    behind it is connected to RabbitMQ and serving)."""
    wait_for(lambda: infra.queue_consumers(st).get(queue, 0) > 0, timeout,
             "%s consuming queue %r" % (svc.name, queue), log=svc.logfile(st),
             interval=0.5, alive=lambda: svc.running(st))


def _wait_api(st, svc, timeout=180):
    wait_for(lambda: svc.healthy(st), timeout,
             "%s answering on port %d" % (svc.name, st.ports[svc.port_key]),
             log=svc.logfile(st), interval=0.3, alive=lambda: svc.running(st))


def _check_port_free(st, svc):
    if svc.port_in_use(st):
        raise DevcloudError("port %d (%s) is already used by a process the devcloud did not start; "
                            "see `ss -ltnp`, or choose another port (--%s-port / DEVCLOUD_%s_PORT)" % (
                                st.ports[svc.port_key], svc.name, svc.port_key[:-5],
                                svc.port_key[:-5].upper()))


def _launch(st, svc):
    if svc.running(st):
        return False
    _check_port_free(st, svc)
    pid = svc.start(st)
    svc.record_code(st)
    say("launched %-15s pid %-7d log %s" % (svc.name, pid, svc.logfile(st)))
    return True


def _all_healthy(st):
    return all(s.healthy(st) for s in SERVICES)


def _preflight_ports(st):
    """Fail before any slow work when an API port is taken by someone else."""
    for svc in SERVICES:
        if not svc.running(st):
            _check_port_free(st, svc)


def _initialized(st):
    return os.path.exists(st.init_marker) and infra.databases_present(st)


# --------------------------------------------------------------------- init

def _init_chains(st):
    """Commands that create schemas and bootstrap data, grouped in chains that
    are independent of each other (so they run in parallel)."""
    etc = st.etc
    kconf = ["--config-file", os.path.join(etc, "keystone", "keystone.conf")]
    nconf = ["--config-file", os.path.join(etc, "nova", "nova.conf")]
    km, nm = st.venv_bin("keystone-manage"), st.venv_bin("nova-manage")
    ks_url = st.url("keystone_port", "/v3/")
    return {
        "keystone": [
            [km] + kconf + ["db_sync"],
            [km] + kconf + ["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
            [km] + kconf + ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
            [km] + kconf + ["bootstrap", "--bootstrap-password", S.ADMIN["password"],
                            "--bootstrap-username", S.ADMIN["username"],
                            "--bootstrap-project-name", S.ADMIN["project_name"],
                            "--bootstrap-region-id", S.REGION,
                            "--bootstrap-admin-url", ks_url, "--bootstrap-internal-url", ks_url,
                            "--bootstrap-public-url", ks_url],
        ],
        "placement": [[st.venv_bin("placement-manage"), "--config-file",
                       os.path.join(etc, "placement", "placement.conf"), "db", "sync"]],
        "glance": [[st.venv_bin("glance-manage"), "--config-file",
                    os.path.join(etc, "glance", "glance-api.conf"), "db_sync"]],
        "nova": [
            [nm] + nconf + ["api_db", "sync"],
            [nm] + nconf + ["cell_v2", "map_cell0", "--database_connection",
                            st.db_url("nova_cell0")],
            [nm] + nconf + ["cell_v2", "create_cell", "--name", "cell1"],
            [nm] + nconf + ["db", "sync"],
        ],
    }


def _initialize(st):
    """From nothing: fresh databases and vhost, empty data dir, schemas."""
    running = [s.pidfile(st) for s in SERVICES if s.running(st)]
    if running:
        say("stopping %d devcloud processes of the previous state" % len(running))
        procs.stop_groups(running, STOP_TIMEOUT)
    with phase("init: drop+create databases %s*, reset vhost %r" % (st.db_prefix, st.vhost)):
        infra.recreate_databases(st)
        infra.ensure_vhost(st, reset=True)
        for sub in ("fernet-keys", "credential-keys", "glance", "nova"):
            shutil.rmtree(os.path.join(st.data, sub), ignore_errors=True)
        for f in ("keystone-seeded.json", "cloud-result.json"):
            if os.path.exists(os.path.join(st.data, f)):
                os.remove(os.path.join(st.data, f))
        configs.write_all(st)
    with phase("init: db syncs, keystone bootstrap, nova cells (parallel, logs/init-*.log)"):
        errors = []

        def chain(name, cmds):
            log = os.path.join(st.logs, "init-%s.log" % name)
            if os.path.exists(log):
                os.remove(log)
            try:
                t = time.monotonic()
                for argv in cmds:
                    run(argv, log=log, env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=st.run)
                say("  init %-9s %.1fs" % (name, time.monotonic() - t))
            except DevcloudError as e:
                errors.append(e)
        threads = [threading.Thread(target=chain, args=item) for item in _init_chains(st).items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    with open(st.init_marker, "w") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%S\n"))


# -------------------------------------------------------------------- start

def _seed_keystone(st, force):
    marker = os.path.join(st.data, "keystone-seeded.json")
    # through JSON once so that it compares equal to what is read back
    want = json.loads(json.dumps({"catalog": st.catalog, "auth_url": st.auth_url}))
    if not force and _load_json(marker) == want:
        return
    with phase("seed keystone (projects, users, roles, catalog)"):
        cloudctl(st, "seed-keystone")
    _save_json(marker, want)


def _prepare(st):
    """Shared first steps of start/restart: venv, RabbitMQ, MariaDB, files."""
    installer.install_venv(st)
    for d in (st.etc, st.data, st.logs, st.run, st.lib):
        os.makedirs(d, exist_ok=True)
    infra.ensure_mariadb(st)
    infra.ensure_rabbitmq(st)
    _sync_lib(st)


def cmd_start(st, args):
    t_start = time.monotonic()
    _preflight_ports(st)
    with phase("prepare (venv, RabbitMQ, MariaDB)"):
        _prepare(st)
    initialized = _initialized(st)
    if initialized and _all_healthy(st):
        try:
            cloudctl(st, "health", timeout=60)
            healthy = True
        except DevcloudError:
            healthy = False
        if healthy and _relaunch_changed(st):
            with phase("seed nova/glance and boot+delete a smoke server as demo"):
                _save_json(_cloud_result_path(st), cloudctl(st, "seed-nova", "smoke"))
        if healthy:
            outputs.cloud_params(st, _load_json(_cloud_result_path(st)))
            outputs.write_all(st, _load_json(_cloud_result_path(st)))
            say("already running and healthy (warm start) in %.1fs; facts: %s" % (
                time.monotonic() - t_start, st.facts_file))
            return 0
    if not initialized:
        _initialize(st)
    else:
        infra.ensure_vhost(st)
        configs.write_all(st)
    outputs.cloud_params(st)

    with phase("launch keystone, placement, glance, neutron"):
        for name in ("keystone", "placement", "glance", "neutron"):
            _launch(st, BY_NAME[name])
    with phase("wait for keystone"):
        _wait_api(st, BY_NAME["keystone"])
    _seed_keystone(st, force=not initialized)
    # the nova services authenticate as their service users (placement
    # reports) right at start-up: they come after the keystone seeding
    with phase("launch nova-conductor, nova-scheduler, nova-api"):
        for name in ("nova-conductor", "nova-scheduler", "nova-api"):
            _launch(st, BY_NAME[name])
    compute = BY_NAME["nova-compute"]
    with phase("wait for nova-conductor on RabbitMQ, then launch nova-compute"):
        _wait_queue_consumer(st, "conductor", BY_NAME["nova-conductor"])
        _launch(st, compute)
    with phase("wait for the APIs (placement, glance, neutron, nova-api)"):
        for name in ("placement", "glance", "neutron", "nova-api"):
            _wait_api(st, BY_NAME[name])
    with phase("wait for nova-compute: RPC consumer, host mapped in cell1"):
        _wait_queue_consumer(st, "compute.%s" % st.name, compute)
        sql = "SELECT host FROM `%s`.host_mappings WHERE host='%s'" % (
            st.databases["nova_api"], st.name)
        wait_for(lambda: bool(infra.mysql(st, sql)), 120, "host %r mapped to a cell" % st.name,
                 log=os.path.join(st.logs, "nova-scheduler.log"), interval=0.5,
                 alive=lambda: compute.running(st))
    with phase("seed nova/glance (flavors, image, quota) and boot+delete a smoke server as demo"):
        result = cloudctl(st, "seed-nova", "smoke")
    _save_json(_cloud_result_path(st), result)
    outputs.cloud_params(st, result)
    outputs.write_all(st, result)
    say("devcloud is up in %.1fs (smoke boot to ACTIVE %.1fs). Facts: %s" % (
        time.monotonic() - t_start, result.get("smoke_boot_seconds", -1), st.facts_file))
    say("plugin config: %s (sections devcloud, devcloud_legacy); clouds.yaml: %s" % (
        st.conf_file, st.clouds_yaml))
    return 0


# ------------------------------------------------------------------ restart

READY_QUEUE = {"nova-conductor": "conductor", "nova-scheduler": "scheduler"}


def cmd_restart(st, args):
    svc = BY_NAME[args.service]
    t0 = time.monotonic()
    if not _initialized(st):
        raise DevcloudError("the devcloud is not initialised; run `start` first")
    _prepare(st)
    configs.write_all(st)
    _relaunch(st, svc)
    with phase("health check (token, nova API, nova-compute up)"):
        cloudctl(st, "health", timeout=120)
    say("restarted %s in %.1fs" % (svc.name, time.monotonic() - t0))
    return 0


def _relaunch(st, svc):
    """Stop one service, start it again and wait until it serves."""
    with phase("stop %s" % svc.name):
        res = procs.stop_groups([svc.pidfile(st)], STOP_TIMEOUT)
        say("%s: %s" % (svc.name, res[svc.pidfile(st)]))
    with phase("start %s" % svc.name):
        if svc.name == "nova-compute":
            _wait_queue_consumer(st, "conductor", BY_NAME["nova-conductor"])
        _launch(st, svc)
        if svc.is_api:
            _wait_api(st, svc)
        elif svc.name == "nova-compute":
            _wait_queue_consumer(st, "compute.%s" % st.name, svc)
        else:
            _wait_queue_consumer(st, READY_QUEUE[svc.name], svc)


def _relaunch_changed(st):
    """Restart the services whose code or config changed since they started (the checkout moved
    on, e.g. a new Neutron stand-in): a warm ``start`` then serves what this checkout defines.
    Returns whether any was restarted."""
    configs.write_all(st)
    changed = [svc for svc in SERVICES if svc.code_changed(st)]
    for svc in changed:
        say("%s: its code or configuration changed since it started" % svc.name)
        _relaunch(st, svc)
    return bool(changed)


# ------------------------------------------------------------- status/stop

def collect_status(st):
    services = {}
    for svc in SERVICES:
        pid = procs.read_pidfile(svc.pidfile(st))
        alive = svc.running(st)
        up = svc.healthy(st) if alive else False
        services[svc.name] = {
            "pid": pid if alive else None,
            "up": up,
            "state": "up" if up else ("starting/unhealthy" if alive else "down"),
            "rss_mb": round(procs.group_rss(pid) / 2**20, 1) if alive else 0,
            "port": st.ports[svc.port_key] if svc.is_api else None,
            "log": svc.logfile(st),
        }
    return {
        "base": st.base,
        "initialized": os.path.exists(st.init_marker),
        "healthy": all(s["up"] for s in services.values()),
        "services": services,
        "infra": infra.infra_status(st),
        "total_rss_mb": round(sum(s["rss_mb"] for s in services.values()), 1),
        "facts": st.facts_file if os.path.exists(st.facts_file) else None,
    }


def cmd_status(st, args):
    status = collect_status(st)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print("devcloud at %s (%s)" % (st.base, "initialized" if status["initialized"]
                                       else "not initialized"))
        print("%-15s %-8s %-19s %9s %6s  %s" % ("SERVICE", "PID", "STATE", "RSS", "PORT", "LOG"))
        for name, s in status["services"].items():
            print("%-15s %-8s %-19s %7.1fMB %6s  %s" % (
                name, s["pid"] or "-", s["state"], s["rss_mb"], s["port"] or "-", s["log"]))
        print("%-15s %-8s %-19s %7.1fMB" % ("total", "", "", status["total_rss_mb"]))
        for name, s in status["infra"].items():
            print("%-15s %-8s %-19s %9s %6s  %s" % (
                name, "", "up" if s["up"] else "down", "", s["port"],
                "started by devcloud" if s["started_by_devcloud"] else "shared (not ours)"))
    ok = status["healthy"] and all(s["up"] for s in status["infra"].values())
    return 0 if ok else 1


def cmd_stop(st, args, quiet=False, stop_infra=True):
    with phase("stop devcloud services"):
        files = [s.pidfile(st) for s in reversed(SERVICES)]
        res = procs.stop_groups(files, STOP_TIMEOUT)
        for svc in reversed(SERVICES):
            state = res.get(svc.pidfile(st))
            if state != "not running" or not quiet:
                say("  %-15s %s" % (svc.name, state))
    if stop_infra and not getattr(args, "keep_infra", False):
        infra.stop_mariadb_if_ours(st)
        infra.stop_rabbitmq_if_ours(st)
    return 0


def cmd_wipe(st, args):
    # the databases and the vhost live in the shared servers: drop them while
    # those still run, and only then stop servers the devcloud itself started
    cmd_stop(st, args, quiet=True, stop_infra=False)
    with phase("drop databases %s* and vhost %r" % (st.db_prefix, st.vhost)):
        if port_open(st.ports["mysql_port"]):
            infra.drop_databases(st)
        else:
            say("  MariaDB not running: databases not dropped (start re-creates them anyway)")
        if port_open(st.ports["rabbit_port"]):
            infra.delete_vhost(st)
        else:
            say("  RabbitMQ not running: vhost not deleted")
    if not getattr(args, "keep_infra", False):
        infra.stop_mariadb_if_ours(st)
        infra.stop_rabbitmq_if_ours(st)
    with phase("remove state under %s%s" % (st.base, " (including the venv)" if args.all else "")):
        names = ["etc", "data", "logs", "run", "lib", "cloudmanagers.conf", "clouds.yaml",
                 "devcloud.json"] + (["venv"] if args.all else [])
        for n in names:
            p = st.path(n)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.remove(p)
        if args.all:
            try:
                os.remove(st.path(".lock"))
                os.rmdir(st.base)
            except OSError:
                pass
    return 0


def cmd_install(st, args):
    with phase("install"):
        installer.install(st, force=args.force)
    return 0
