# Stands in for pip's get-pip.py, which ansible-test downloads from a host
# these machines cannot reach (only the package registries are): the pip
# bundled with Python (ensurepip), then from PyPI what get-pip.py installs,
# with its options (--no-setuptools, --no-wheel) and pip's.
# scripts/test-ansible puts it where ansible-test looks for its cached copy.
import subprocess
import sys

own = {"--no-setuptools", "--no-wheel"}
args = [a for a in sys.argv[1:] if a not in own]
packages = []
if "--no-setuptools" not in sys.argv[1:]:
    packages.append("setuptools")
if "--no-wheel" not in sys.argv[1:]:
    packages.append("wheel")
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args + packages)
