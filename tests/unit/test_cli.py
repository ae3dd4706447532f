"""`cloudmanagers check-config`: one row per section, exit status says whether all is well."""

from cloudmanagers_plugin import cli
from tests.support.controller import LEGACY_SECTION, write_config


def test_check_config_all_good(conf_path, cloud, capsys):
    assert cli.main(["check-config", "--config", conf_path]) == 0
    out = capsys.readouterr().out
    assert "SECTION" in out and "test_os" in out and "http://127.0.0.1:5000/v3" in out and "OK" in out
    assert "general" not in out.split("\n", 1)[1]


def test_check_config_reports_each_bad_section(tmp_path, cloud, capsys):
    path = write_config(tmp_path / "c.conf", LEGACY_SECTION + "\n[broken]\ncm_type = openstack\n"
                        + LEGACY_SECTION.replace("[test_os]", "[wrongpw]").replace("password = ", "password = x"))
    assert cli.main(["check-config", "--config", path]) == 2  # an INVALID section is a configuration error
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert rows["test_os"].endswith("OK")
    assert "INVALID" in rows["broken"] and "key 'keystone_base_url' is missing" in rows["broken"]
    assert "FAILED" in rows["wrongpw"] and "refused the credentials" in rows["wrongpw"]
    assert "s3cr3t" not in out


def test_check_config_missing_file(tmp_path, capsys):
    assert cli.main(["check-config", "--config", str(tmp_path / "nope.conf")]) == 2
    assert "nope.conf" in capsys.readouterr().err


def test_help_lists_check_config(capsys):
    try:
        cli.main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert "check-config" in capsys.readouterr().out
