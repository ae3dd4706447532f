"""The shared RabbitMQ and MariaDB: reuse them, start them only when they are
not running, install them only when they are missing.

The devcloud keeps to its own corner of each: a RabbitMQ vhost named after the
devcloud (``devcloud``) and databases prefixed ``devcloud_`` owned by a DB user
of that name. Re-initialising drops and recreates exactly those, never
anything else. If the devcloud had to start a server itself it records that
in ``<base>/run`` so that ``stop`` ends only what it started.
"""

import json
import os
import subprocess
from typing import Any, Dict, List

from .installer import ensure_apt_packages
from .procs import pid_alive, process_start_time, read_pidfile, write_pidfile
from .settings import SERVICE_PASSWORD, Settings
from .util import DevcloudError, phase, port_open, run, say, wait_for, which

MARIADB_LOG = "/var/log/mysql/error.log"
MARIADB_SOCKET = "/run/mysqld/mysqld.sock"


# ----------------------------------------------------------------- MariaDB

_ADMIN_VIA_SOCKET: List[bool] = []  # set once TCP login as root was refused but the socket works


def mysql(settings: Settings, sql: str, check: bool = True, timeout: float = 120) -> List[List[str]]:
    """Run SQL as the MariaDB admin; return stdout rows (tab separated).

    Over TCP 127.0.0.1 first (root with an empty password, as on the
    project's machines). A stock Debian MariaDB lets root in only through the
    unix socket (unix_socket auth), so when TCP is refused and we are root,
    the socket of the default server is used instead.
    """
    env = dict(os.environ)
    if settings.mysql_root_password:
        env["MYSQL_PWD"] = settings.mysql_root_password
    client = [which("mariadb") or "mariadb", "--no-defaults", "-u", settings.mysql_root_user, "-N", "-B"]
    over_tcp = ["--protocol=TCP", "-h", "127.0.0.1", "-P", str(settings.ports["mysql_port"])]
    over_socket = ["--protocol=SOCKET", "-S", MARIADB_SOCKET]
    argv = client + (over_socket if _ADMIN_VIA_SOCKET else over_tcp) + ["-e", sql]
    completed = run(argv, env=env, check=False, timeout=timeout)
    if (completed.returncode != 0 and "Access denied" in completed.stderr and not _ADMIN_VIA_SOCKET
            and settings.ports["mysql_port"] == 3306 and os.geteuid() == 0
            and os.path.exists(MARIADB_SOCKET)):
        completed = run(client + over_socket + ["-e", sql], env=env, check=False, timeout=timeout)
        if completed.returncode == 0:
            _ADMIN_VIA_SOCKET.append(True)
    if check and completed.returncode != 0:
        raise DevcloudError(f"MariaDB admin command failed (as {settings.mysql_root_user}): "
                            f"{completed.stderr.strip()[-2000:]}")
    return [line.split("\t") for line in completed.stdout.splitlines() if line]


def _mariadb_marker(settings: Settings) -> str:
    return os.path.join(settings.run, "mariadb.started-by-devcloud.pid")


def ensure_mariadb(settings: Settings) -> None:
    """Reuse the MariaDB on the port; start (after installing, if need be) one only when none runs."""
    port = settings.ports["mysql_port"]
    if port_open(port):
        ensure_apt_packages(["mariadb"])
        say(f"MariaDB: reusing the server on 127.0.0.1:{port}")
        return
    ensure_apt_packages(["mariadbd", "mariadb"])
    with phase("MariaDB: not running, starting /usr/sbin/mariadbd"):
        for folder in ("/run/mysqld", "/var/log/mysql"):
            os.makedirs(folder, exist_ok=True)
            subprocess.run(["chown", "mysql:mysql", folder], check=False)
        if not os.path.isdir("/var/lib/mysql/mysql"):
            run(["mariadb-install-db", "--user=mysql", "--datadir=/var/lib/mysql",
                 "--auth-root-authentication-method=normal", "--skip-test-db"],
                log=os.path.join(settings.logs, "mariadb-install.log"))
        os.makedirs(settings.run, exist_ok=True)
        pidfile = _mariadb_marker(settings)
        extra = [] if port == 3306 else ["--", f"--port={port}"]
        run(["start-stop-daemon", "--start", "--oknodo", "--background", "--make-pidfile",
             "--pidfile", pidfile, "--exec", "/usr/sbin/mariadbd"] + extra)
        pid = read_pidfile(pidfile)
        if pid:
            write_pidfile(pidfile, pid)  # add the start time: guards against pid reuse
        wait_for(lambda: port_open(port), 60, f"MariaDB on port {port}", log=MARIADB_LOG,
                 alive=lambda: pid_alive(pidfile))


def stop_mariadb_if_ours(settings: Settings) -> None:
    """Stop the MariaDB only if the devcloud started it (a shared one is never touched)."""
    pidfile = _mariadb_marker(settings)
    if not os.path.exists(pidfile):
        return
    if pid_alive(pidfile):
        pid = read_pidfile(pidfile)
        say(f"MariaDB: stopping the server the devcloud started (pid {pid})")
        run(["start-stop-daemon", "--stop", "--oknodo", "--pid", str(pid),
             "--retry", "TERM/60/KILL/5"], check=False)
    os.remove(pidfile)


def databases_present(settings: Settings) -> bool:
    names = {row[0] for row in mysql(settings, "SHOW DATABASES")}
    return all(database in names for database in settings.databases.values())


def recreate_databases(settings: Settings) -> None:
    """DROP and CREATE the devcloud's databases and (re)grant its DB user.

    Dropping matters: nova-compute refuses to start when the DB still holds a
    compute service record from an earlier life of the same host name.
    """
    user = settings.db_user
    statements = [f"DROP DATABASE IF EXISTS `{database}`; CREATE DATABASE `{database}`;"
                  for database in settings.databases.values()]
    for host in ("127.0.0.1", "localhost"):
        statements.append(f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{SERVICE_PASSWORD}';")
        statements.append(f"ALTER USER '{user}'@'{host}' IDENTIFIED BY '{SERVICE_PASSWORD}';")
        statements.append(f"GRANT ALL PRIVILEGES ON `{settings.name}\\_%`.* TO '{user}'@'{host}';")
    mysql(settings, "\n".join(statements))


def drop_databases(settings: Settings) -> None:
    statements = [f"DROP DATABASE IF EXISTS `{database}`;" for database in settings.databases.values()]
    statements += [f"DROP USER IF EXISTS '{settings.db_user}'@'{host}';" for host in ("127.0.0.1", "localhost")]
    mysql(settings, "\n".join(statements))


# ----------------------------------------------------------------- RabbitMQ

def rabbitmqctl(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return run([which("rabbitmqctl") or "rabbitmqctl", "-q"] + list(args), check=check,
               timeout=timeout)


def _rabbit_marker(settings: Settings) -> str:
    return os.path.join(settings.run, "rabbitmq.started-by-devcloud.json")


def ensure_rabbitmq(settings: Settings) -> None:
    """Reuse the broker on the port; start (after installing, if need be) one only when none runs."""
    port = settings.ports["rabbit_port"]
    if port_open(port):
        ensure_apt_packages(["rabbitmqctl"])
        say(f"RabbitMQ: reusing the broker on 127.0.0.1:{port}")
        return
    ensure_apt_packages(["rabbitmq-server", "rabbitmqctl"])
    with phase("RabbitMQ: not running, starting rabbitmq-server -detached"):
        env = dict(os.environ)
        if port != 5672:
            env["RABBITMQ_NODE_PORT"] = str(port)
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: port_open(port), 90, f"RabbitMQ on port {port}", interval=0.5)
        rabbitmqctl("await_startup", timeout=90)
        pid = None
        completed = rabbitmqctl("eval", "os:getpid().", check=False)
        if completed.returncode == 0:
            try:
                pid = int(completed.stdout.strip().strip('"'))
            except ValueError:
                pid = None
        os.makedirs(settings.run, exist_ok=True)
        with open(_rabbit_marker(settings), "w") as handle:
            json.dump({"pid": pid, "starttime": process_start_time(pid) if pid else None}, handle)


def stop_rabbitmq_if_ours(settings: Settings) -> None:
    """Stop the broker only if the devcloud started it (a shared one is never touched)."""
    marker = _rabbit_marker(settings)
    if not os.path.exists(marker):
        return
    with open(marker) as handle:
        started = json.load(handle)
    pid = started.get("pid")
    if pid and process_start_time(pid) == started.get("starttime"):
        say(f"RabbitMQ: stopping the broker the devcloud started (pid {pid})")
        rabbitmqctl("shutdown", check=False, timeout=120)
    os.remove(marker)


def ensure_vhost(settings: Settings, reset: bool = False) -> None:
    """Create the devcloud's vhost (reset=True: delete it first, dropping stale
    queues of an earlier life) and give the RabbitMQ user full rights on it."""
    vhosts = set(rabbitmqctl("list_vhosts").stdout.split())
    if reset and settings.vhost in vhosts:
        rabbitmqctl("delete_vhost", settings.vhost)
        vhosts.discard(settings.vhost)
    if settings.vhost not in vhosts:
        rabbitmqctl("add_vhost", settings.vhost)
    rabbitmqctl("set_permissions", "-p", settings.vhost, settings.rabbit_user, ".*", ".*", ".*")
    limit_notification_queues(settings)


# Nova's notifier declares a queue named after its topic (versioned_notifications.info) that
# nothing in the devcloud consumes; listeners bind queues of their own. Capped, it cannot grow
# without bound while the devcloud runs for days.
NOTIFICATION_QUEUE_POLICY = json.dumps({"max-length": 1000, "overflow": "drop-head", "message-ttl": 600000})


def limit_notification_queues(settings: Settings) -> None:
    """Cap Nova's unconsumed ``versioned_notifications.*`` queues in the devcloud's vhost."""
    rabbitmqctl("set_policy", "-p", settings.vhost, "--apply-to", "queues", "devcloud-notifications",
                r"^versioned_notifications\.", NOTIFICATION_QUEUE_POLICY)


def delete_vhost(settings: Settings) -> None:
    if settings.vhost in set(rabbitmqctl("list_vhosts").stdout.split()):
        rabbitmqctl("delete_vhost", settings.vhost)


def queue_consumers(settings: Settings) -> Dict[str, int]:
    """queue name -> consumer count in the devcloud's vhost: a service consuming its queue serves."""
    completed = rabbitmqctl("list_queues", "-p", settings.vhost, "name", "consumers", check=False)
    consumers = {}
    for line in completed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            consumers[parts[0]] = int(parts[1])
    return consumers


def infra_status(settings: Settings) -> Dict[str, Dict[str, Any]]:
    """RabbitMQ and MariaDB for ``status``: up, and whether the devcloud started them."""
    return {
        "rabbitmq": {"port": settings.ports["rabbit_port"], "up": port_open(settings.ports["rabbit_port"]),
                     "started_by_devcloud": os.path.exists(_rabbit_marker(settings)), "vhost": settings.vhost},
        "mariadb": {"port": settings.ports["mysql_port"], "up": port_open(settings.ports["mysql_port"]),
                    "started_by_devcloud": os.path.exists(_mariadb_marker(settings)),
                    "databases": sorted(settings.databases.values())},
    }
