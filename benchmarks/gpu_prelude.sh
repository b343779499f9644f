# Sourced by the run_gpu_*.sh scripts on a bare GPU machine (no network): installs the wheels carried in .whl/
# (made here with `python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl <pkgs>`)
# and puts this checkout on PYTHONPATH.
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/synid-site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/synid-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
