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

from .installer import ensure_apt_packages
from .procs import pid_alive, read_pidfile, write_pidfile, proc_starttime
from .util import DevcloudError, phase, port_open, run, say, wait_for, which

MARIADB_LOG = "/var/log/mysql/error.log"


# ----------------------------------------------------------------- MariaDB

_ADMIN_VIA_SOCKET = []  # set once TCP login as root was refused but the socket works


def mysql(st, sql, check=True, timeout=120):
    """Run SQL as the MariaDB admin; return stdout rows (tab separated).

    Over TCP 127.0.0.1 first (root with an empty password, as on the
    project's machines). A stock Debian MariaDB lets root in only through the
    unix socket (unix_socket auth), so when TCP is refused and we are root,
    the socket of the default server is used instead.
    """
    env = dict(os.environ)
    if st.mysql_root_password:
        env["MYSQL_PWD"] = st.mysql_root_password
    base = [which("mariadb") or "mariadb", "--no-defaults", "-u", st.mysql_root_user, "-N", "-B"]
    tcp = ["--protocol=TCP", "-h", "127.0.0.1", "-P", str(st.ports["mysql_port"])]
    sock = ["--protocol=SOCKET", "-S", "/run/mysqld/mysqld.sock"]
    argv = base + (sock if _ADMIN_VIA_SOCKET else tcp) + ["-e", sql]
    cp = run(argv, env=env, check=False, timeout=timeout)
    if (cp.returncode != 0 and "Access denied" in cp.stderr and not _ADMIN_VIA_SOCKET
            and st.ports["mysql_port"] == 3306 and os.geteuid() == 0
            and os.path.exists(sock[-1])):
        cp = run(base + sock + ["-e", sql], env=env, check=False, timeout=timeout)
        if cp.returncode == 0:
            _ADMIN_VIA_SOCKET.append(True)
    if check and cp.returncode != 0:
        raise DevcloudError("MariaDB admin command failed (as %s): %s" % (
            st.mysql_root_user, cp.stderr.strip()[-2000:]))
    return [line.split("\t") for line in cp.stdout.splitlines() if line]


def _mariadb_marker(st):
    return os.path.join(st.run, "mariadb.started-by-devcloud.pid")


def ensure_mariadb(st):
    port = st.ports["mysql_port"]
    if port_open(port):
        ensure_apt_packages(["mariadb"])
        say("MariaDB: reusing the server on 127.0.0.1:%d" % port)
        return
    ensure_apt_packages(["mariadbd", "mariadb"])
    with phase("MariaDB: not running, starting /usr/sbin/mariadbd"):
        for d in ("/run/mysqld", "/var/log/mysql"):
            os.makedirs(d, exist_ok=True)
            subprocess.run(["chown", "mysql:mysql", d], check=False)
        if not os.path.isdir("/var/lib/mysql/mysql"):
            run(["mariadb-install-db", "--user=mysql", "--datadir=/var/lib/mysql",
                 "--auth-root-authentication-method=normal", "--skip-test-db"],
                log=os.path.join(st.logs, "mariadb-install.log"))
        os.makedirs(st.run, exist_ok=True)
        pidfile = _mariadb_marker(st)
        extra = [] if port == 3306 else ["--", "--port=%d" % port]
        run(["start-stop-daemon", "--start", "--oknodo", "--background", "--make-pidfile",
             "--pidfile", pidfile, "--exec", "/usr/sbin/mariadbd"] + extra)
        pid = read_pidfile(pidfile)
        if pid:
            write_pidfile(pidfile, pid)  # add the start time: guards against pid reuse
        wait_for(lambda: port_open(port), 60, "MariaDB on port %d" % port, log=MARIADB_LOG,
                 alive=lambda: pid_alive(pidfile))


def stop_mariadb_if_ours(st):
    pidfile = _mariadb_marker(st)
    if not os.path.exists(pidfile):
        return
    if pid_alive(pidfile):
        pid = read_pidfile(pidfile)
        say("MariaDB: stopping the server the devcloud started (pid %d)" % pid)
        run(["start-stop-daemon", "--stop", "--oknodo", "--pid", str(pid),
             "--retry", "TERM/60/KILL/5"], check=False)
    os.remove(pidfile)


def databases_present(st):
    names = {r[0] for r in mysql(st, "SHOW DATABASES")}
    return all(db in names for db in st.databases.values())


def recreate_databases(st):
    """DROP and CREATE the devcloud's databases and (re)grant its DB user.

    Dropping matters: nova-compute refuses to start when the DB still holds a
    compute service record from an earlier life of the same host name.
    """
    u = st.db_user
    stmts = ["DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s`;" % (db, db)
             for db in st.databases.values()]
    for host in ("127.0.0.1", "localhost"):
        stmts.append("CREATE USER IF NOT EXISTS '%s'@'%s' IDENTIFIED BY 'secret';" % (u, host))
        stmts.append("ALTER USER '%s'@'%s' IDENTIFIED BY 'secret';" % (u, host))
        stmts.append("GRANT ALL PRIVILEGES ON `%s\\_%%`.* TO '%s'@'%s';" % (st.name, u, host))
    mysql(st, "\n".join(stmts))


def drop_databases(st):
    stmts = ["DROP DATABASE IF EXISTS `%s`;" % db for db in st.databases.values()]
    stmts += ["DROP USER IF EXISTS '%s'@'%s';" % (st.db_user, h) for h in ("127.0.0.1", "localhost")]
    mysql(st, "\n".join(stmts))


# ----------------------------------------------------------------- RabbitMQ

def rabbitmqctl(*args, check=True, timeout=60):
    return run([which("rabbitmqctl") or "rabbitmqctl", "-q"] + list(args), check=check,
               timeout=timeout)


def _rabbit_marker(st):
    return os.path.join(st.run, "rabbitmq.started-by-devcloud.json")


def ensure_rabbitmq(st):
    port = st.ports["rabbit_port"]
    if port_open(port):
        ensure_apt_packages(["rabbitmqctl"])
        say("RabbitMQ: reusing the broker on 127.0.0.1:%d" % port)
        return
    ensure_apt_packages(["rabbitmq-server", "rabbitmqctl"])
    with phase("RabbitMQ: not running, starting rabbitmq-server -detached"):
        env = dict(os.environ)
        if port != 5672:
            env["RABBITMQ_NODE_PORT"] = str(port)
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: port_open(port), 90, "RabbitMQ on port %d" % port, interval=0.5)
        rabbitmqctl("await_startup", timeout=90)
        pid = None
        cp = rabbitmqctl("eval", "os:getpid().", check=False)
        if cp.returncode == 0:
            try:
                pid = int(cp.stdout.strip().strip('"'))
            except ValueError:
                pid = None
        os.makedirs(st.run, exist_ok=True)
        with open(_rabbit_marker(st), "w") as f:
            json.dump({"pid": pid, "starttime": proc_starttime(pid) if pid else None}, f)


def stop_rabbitmq_if_ours(st):
    marker = _rabbit_marker(st)
    if not os.path.exists(marker):
        return
    with open(marker) as f:
        info = json.load(f)
    pid = info.get("pid")
    if pid and proc_starttime(pid) == info.get("starttime"):
        say("RabbitMQ: stopping the broker the devcloud started (pid %d)" % pid)
        rabbitmqctl("shutdown", check=False, timeout=120)
    os.remove(marker)


def ensure_vhost(st, reset=False):
    """Create the devcloud's vhost (reset=True: delete it first, dropping stale
    queues of an earlier life) and give the RabbitMQ user full rights on it."""
    vhosts = set(rabbitmqctl("list_vhosts").stdout.split())
    if reset and st.vhost in vhosts:
        rabbitmqctl("delete_vhost", st.vhost)
        vhosts.discard(st.vhost)
    if st.vhost not in vhosts:
        rabbitmqctl("add_vhost", st.vhost)
    rabbitmqctl("set_permissions", "-p", st.vhost, st.rabbit_user, ".*", ".*", ".*")


def delete_vhost(st):
    if st.vhost in set(rabbitmqctl("list_vhosts").stdout.split()):
        rabbitmqctl("delete_vhost", st.vhost)


def queue_consumers(st):
    """queue name -> consumer count in the devcloud's vhost."""
    cp = rabbitmqctl("list_queues", "-p", st.vhost, "name", "consumers", check=False)
    out = {}
    for line in cp.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def infra_status(st):
    return {
        "rabbitmq": {"port": st.ports["rabbit_port"], "up": port_open(st.ports["rabbit_port"]),
                     "started_by_devcloud": os.path.exists(_rabbit_marker(st)), "vhost": st.vhost},
        "mariadb": {"port": st.ports["mysql_port"], "up": port_open(st.ports["mysql_port"]),
                    "started_by_devcloud": os.path.exists(_mariadb_marker(st)),
                    "databases": sorted(st.databases.values())},
    }

