"""The distributions a list of requirements pulls in, resolved through the installed
distributions' metadata: `python -m tests.dist_closure '{"requirements": [...], "extras": [...]}'`
prints them as JSON. A module run in its own interpreter, because MindNLP (imported by other tests)
patches importlib.metadata for the process it runs in."""
import importlib.metadata
import json
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    seen: set[str] = set()
    todo = [(Requirement(r), tuple(extras)) for r in requirements]
    while todo:
        req, active = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (active or ("",))):
            continue
        key = f"{canonicalize_name(req.name)}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        dist = importlib.metadata.distribution(req.name)   # not installed: the test env is incomplete
        todo += [(Requirement(r), tuple(sorted(req.extras))) for r in dist.requires or ()]
    return {k.split("[")[0] for k in seen}


if __name__ == "__main__":
    query = json.loads(sys.argv[1])
    print(json.dumps(sorted(closure(query["requirements"], tuple(query.get("extras", ()))))))
