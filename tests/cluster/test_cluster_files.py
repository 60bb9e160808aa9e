"""The cluster's files: the systemd template, the HAProxy config, the node config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bizzyd_proc import BIZZYD, ROOT


def test_template_unit_passes_systemd_analyze_verify(tmp_path):
    assert shutil.which("systemd-analyze"), "install Debian's systemd package (make deps)"
    bizzyd = Path(sys.executable).with_name("bizzyd")
    text = (ROOT / "systemd" / "bizzyd@.service").read_text()
    (tmp_path / "bizzyd@.service").write_text(text.replace("/opt/bizzyd/bin/bizzyd",
                                                           str(bizzyd)))
    # an instance of the template, as `systemctl start bizzyd@node1` would load it
    (tmp_path / "bizzyd@node1.service").symlink_to(tmp_path / "bizzyd@.service")
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "bizzyd@node1.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("PIDFile=/run/bizzyd/%i/bizzyd.pid", "-c /etc/bizzyd/%i.yaml",
                 "KillSignal=SIGQUIT", "RuntimeDirectory=bizzyd/%i"):
        assert line in text


def test_haproxy_config_is_valid(tmp_path):
    assert shutil.which("haproxy"), "install Debian's haproxy (scripts/install-deps cluster)"
    env = {**os.environ, "BIZZYD_LB_BIND": "127.0.0.1:1", "BIZZYD_LB_STATS": "127.0.0.1:2",
           "BIZZYD_LB_RUN": str(tmp_path), "BIZZYD_NODE1": "127.0.0.1:3",
           "BIZZYD_NODE2": "127.0.0.1:4", "BIZZYD_NODE3": "127.0.0.1:5"}
    result = subprocess.run(["haproxy", "-c", "-f", str(ROOT / "conf" / "haproxy.cfg")],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "conf" / "haproxy.cfg").read_text()
    for line in ("option httpchk GET /health", "on-marked-down shutdown-sessions",
                 "option redispatch", "balance leastconn"):
        assert line in text


def test_node_config_passes_bizzyd_t(tmp_path):
    result = subprocess.run([*BIZZYD, "-p", str(tmp_path), "-c",
                             str(ROOT / "conf" / "cluster" / "node.yaml"), "-t"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
