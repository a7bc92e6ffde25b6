# Sourced by scripts/test, scripts/check and scripts/serve: make ./.venv (once) and install mailslot
# into it in editable mode with the extras given as $1 ("test", or "" for none). pip runs again only
# when pyproject.toml or the extras change; its output goes to .venv/pip.log and is shown on failure.
# PYTHON picks the interpreter (default python3, which must be 3.11 or newer).

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv
extras=${1:-}
spec=.
[ -n "$extras" ] && spec=".[$extras]"

if [ ! -x "$VENV/bin/python" ]; then
    if ! "${PYTHON:-python3}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: mailslot needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)" >&2
        exit 1
    fi
    "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.mailslot-installed-${extras:-base}"
want="$("$VENV/bin/python" -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$spec" >"$VENV/pip.log" 2>&1; then
        cat "$VENV/pip.log" >&2
        echo "error: installing mailslot into $VENV failed (log above, and in $VENV/pip.log)" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
fi
