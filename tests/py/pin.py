"""Prints requirements lines, with PyPI's sha256, for the wheels in a folder.

    python3 -m pip download -d DIR phxsocket==0.1.5 ...   (with the target Python)
    python3 tests/py/pin.py DIR

Each hash comes from PyPI's simple index (JSON, PEP 691) and must equal the
sha256 of the downloaded file, so a local mirror or cache cannot slip in
other bytes. Not run by the tests.
"""

import hashlib
import json
import os
import sys
import urllib.request


def main(folder):
    for name in sorted(os.listdir(folder)):
        project, version = name.split("-")[:2]
        request = urllib.request.Request(
            "https://pypi.org/simple/%s/" % project.replace("_", "-").lower(),
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            index = json.load(answer)
        published = {f["filename"]: f["hashes"]["sha256"] for f in index["files"]}
        with open(os.path.join(folder, name), "rb") as wheel:
            local = hashlib.sha256(wheel.read()).hexdigest()
        if published.get(name) != local:
            sys.exit("%s: PyPI has %s, the file is %s" % (name, published.get(name), local))
        print("%s==%s \\\n    --hash=sha256:%s" % (index["name"], version, local))


if __name__ == "__main__":
    main(sys.argv[1])
