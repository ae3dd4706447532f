"""Install the cloudmanagers plugin, its standalone agent and the `cloudmanagers` command."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).resolve().parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "cloudmanagers_plugin" / "version.py").read_text()
).group(1)

setup(
    name="synapse-cloudmanagers-plugin",
    version=VERSION,
    description="Synapse agent plugin that manages private OpenStack clouds over AMQP",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=find_packages(include=["cloudmanagers_plugin", "cloudmanagers_plugin.*"]),
    install_requires=[
        "python-novaclient>=17.0.0",
        "python-keystoneclient>=4.0.0",
        "keystoneauth1>=4.0.0",
        "pika>=1.2.0",
        "PyYAML>=5.1",
        "prometheus-client>=0.12.0",
    ],
    extras_require={"test": ["pytest>=7", "requests-mock>=1.9"]},
    data_files=[
        (
            "share/synapse-cloudmanagers-plugin",
            [
                "etc/synapse/cloudmanagers.conf",
                "etc/synapse-agent/synapse-agent.conf",
                "etc/synapse-agent/permissions.conf",
                "packaging/systemd/cloudmanagers-agent.service",
            ],
        ),
    ],
    entry_points={"console_scripts": ["cloudmanagers = cloudmanagers_plugin.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Environment :: No Input/Output (Daemon)",
        "Topic :: System :: Systems Administration",
    ],
)
