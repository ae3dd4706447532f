# Packaging of synapse-cloudmanagers-plugin: sdist, wheel, RPM and the synapse drop-in folder.
#
#   make sdist                  dist/<name>-<version>.tar.gz (the setup.py sdist)
#   make wheel                  the sdist, and the wheel built from it
#   make rpm                    noarch RPM (and SRPM) built with rpmbuild from the sdist
#                               (each makes .venv, with `build`, first, and rpm installs rpmbuild
#                               if it is missing, so they work in a fresh clone)
#   make install-dropin [DEST=/var/lib/synapse/custom_plugin]
#                               copy the plugin package into a synapse custom plugin folder
#   make check-packaging        build everything, then run the packaging tests on it
#   make check-pip              install the wheel and its dependencies in a clean virtualenv
#   make build-deps             install what the targets above need (rpm, build, twine)
#   make venv                   .venv: the plugin (editable) and its test tools
#   make test                   the whole test suite on a fresh machine (tools/run-tests)
#   make demo                   the README's demo on a fresh machine (tools/demo)
#   make clean                  remove build outputs
#
# The version comes from cloudmanagers_plugin/version.py only.

VENV    ?= .venv
PYTHON  ?= $(VENV)/bin/python
PYTEST  ?= $(PYTHON) -m pytest
DEST    ?= /var/lib/synapse/custom_plugin
DIST    ?= dist
RPMTOP  ?= build/rpmbuild
# Extra options of `python -m build`, e.g. BUILD_FLAGS=--no-isolation to build offline with
# the installed setuptools and wheel instead of fresh ones from the package index.
BUILD_FLAGS ?=

NAME    := synapse-cloudmanagers-plugin
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' cloudmanagers_plugin/version.py)
SPEC    := packaging/rpm/$(NAME).spec
# setuptools names the sdist with dashes (old releases) or underscores (recent ones).
SDISTS  := $(DIST)/$(NAME)-$(VERSION).tar.gz $(DIST)/$(subst -,_,$(NAME))-$(VERSION).tar.gz
SDIST    = $(firstword $(wildcard $(SDISTS)))
# rpmbuild checks BuildRequires against the rpm database, which is empty off RPM-based
# systems (e.g. Debian's rpm package): skip that check there.
RPMBUILD_FLAGS ?= $(shell rpm -q rpm >/dev/null 2>&1 || echo --nodeps)

.PHONY: help venv build-tool rpmbuild-tool sdist wheel rpm install-dropin check-packaging check-pip build-deps test demo clean

help:
	@sed -n 's/^#   make /  make /p' Makefile

# The plugin's own environment, apart from the devcloud's OpenStack services.
venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' build twine
	touch $@

# The default PYTHON is the venv's, which `make venv` fills with `build`: a fresh clone makes it
# first. Another PYTHON (e.g. the packaging tests' own interpreter) must bring `build` itself.
build-tool: $(if $(filter $(VENV)/bin/python,$(PYTHON)),venv)
	@test -n "$(VERSION)" || { echo "no __version__ in cloudmanagers_plugin/version.py" >&2; exit 1; }
	@$(PYTHON) -c 'import build' 2>/dev/null || { echo "$(PYTHON) -m build is missing: run make build-deps" >&2; exit 1; }

rpmbuild-tool:
	@command -v rpmbuild >/dev/null || sh packaging/install-build-deps.sh rpmbuild

sdist: build-tool
	rm -f $(SDISTS)
	$(PYTHON) -m build --sdist $(BUILD_FLAGS) --outdir $(DIST) .

# Without --sdist/--wheel, build makes the sdist and then the wheel from the unpacked sdist,
# so the wheel never picks up stale files from a build/ folder.
wheel: build-tool
	rm -f $(SDISTS) $(DIST)/$(subst -,_,$(NAME))-$(VERSION)-*.whl
	$(PYTHON) -m build $(BUILD_FLAGS) --outdir $(DIST) .

rpm: rpmbuild-tool sdist
	rm -rf $(RPMTOP) $(DIST)/$(NAME)-$(VERSION)-*.rpm
	mkdir -p $(RPMTOP)/SOURCES
	cp $(SDIST) $(RPMTOP)/SOURCES/$(NAME)-$(VERSION).tar.gz
	rpmbuild -ba $(RPMBUILD_FLAGS) \
		--define "_topdir $(abspath $(RPMTOP))" \
		--define "cm_version $(VERSION)" \
		$(SPEC)
	cp $(RPMTOP)/RPMS/noarch/$(NAME)-$(VERSION)-*.noarch.rpm $(RPMTOP)/SRPMS/$(NAME)-$(VERSION)-*.src.rpm $(DIST)/

install-dropin:
	sh packaging/install-dropin.sh $(DEST)

# The tests use the artifacts built here (CM_PACKAGING_DIST) instead of building their own.
check-packaging: wheel rpm
	CM_PACKAGING_DIST=$(abspath $(DIST)) $(PYTEST) -m packaging tests/packaging

check-pip: wheel
	sh packaging/check-pip.sh $(DIST)

build-deps: venv
	PYTHON=$(PYTHON) sh packaging/install-build-deps.sh

test: venv
	PYTHON=$(PYTHON) tools/run-tests

demo: venv
	$(PYTHON) tools/demo

clean:
	rm -rf $(DIST) build *.egg-info .demo
