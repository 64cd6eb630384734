#!/usr/bin/env python3
"""Validate JSON documents against the OCI image-spec and runtime-spec schemas kept in
testdata/conformance (draft-04), plus the few rules upstream checks outside the schemas.

  oci-validate.py image KIND FILE...    KIND: manifest | index | config | layout | descriptor
  oci-validate.py runtime KIND FILE...  KIND: config | state
  oci-validate.py selftest              replay the conformance vectors; fail on any disagreement

Exit status 0 when every file is valid, 1 otherwise (each failure is printed)."""
import base64, json, os, re, sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
import jsonschema  # Debian: python3-jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
CONF = os.path.join(HERE, "..", "..", "testdata", "conformance")
IMAGE = os.path.join(CONF, "oci-image-spec-schema")
RUNTIME = os.path.join(CONF, "oci-runtime-spec-schema")
IMAGE_ROOTS = {
    "manifest": "https://opencontainers.org/schema/image/manifest",
    "index": "https://opencontainers.org/schema/image/index",
    "config": "https://opencontainers.org/schema/image/config",
    "layout": "https://opencontainers.org/schema/image/layout",
    "descriptor": "https://opencontainers.org/schema/descriptor",
}


def image_validator(kind):
    store = {}
    with open(os.path.join(IMAGE, "id-map.tsv")) as f:
        next(f)
        for line in f:
            url, name = line.rstrip("\n").split("\t")
            with open(os.path.join(IMAGE, name)) as s:
                store[url] = json.load(s)
    root = store[IMAGE_ROOTS[kind]]

    def offline(url):
        # Nested ids move the base of relative refs (validators differ on whether an id
        # beside a $ref counts), so resolve any URL by its file name: never the network.
        url = url.split("#")[0]
        if url in store:
            return store[url]
        name = url.rstrip("/").rsplit("/", 1)[-1]
        with open(os.path.join(IMAGE, name)) as s:
            return json.load(s)

    resolver = jsonschema.RefResolver(IMAGE_ROOTS[kind], root, store=store, handlers={"https": offline, "http": offline})
    return jsonschema.Draft4Validator(root, resolver=resolver, format_checker=jsonschema.FormatChecker())


def runtime_validator(kind):
    base = "file://" + os.path.abspath(RUNTIME) + "/"
    store = {}
    for name in os.listdir(RUNTIME):
        if name.endswith(".json"):
            with open(os.path.join(RUNTIME, name)) as s:
                store[base + name] = json.load(s)
    root = store[base + kind + "-schema.json"]
    resolver = jsonschema.RefResolver(base + kind + "-schema.json", root, store=store)
    return jsonschema.Draft4Validator(root, resolver=resolver)


def extra_image_rules(doc):
    """Checks upstream makes outside the schemas (see testdata/conformance/README.md)."""
    errors = []

    def walk(v):
        if isinstance(v, dict):
            d = v.get("digest")
            if isinstance(d, str) and d.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-f]{64}", d):
                errors.append("sha256 digest must be 64 lowercase hex characters: " + d)
            data = v.get("data")
            if isinstance(data, str) and "digest" in v:
                try:
                    base64.b64decode(data, validate=True)
                    if len(data) % 4:
                        raise ValueError
                except Exception:
                    errors.append("descriptor data is not padded standard base64")
            for u in v.get("urls", []) if isinstance(v.get("urls"), list) else []:
                if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", str(u)):
                    errors.append("descriptor url is not an absolute URI: %s" % u)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(doc)
    cfg = doc.get("config") if isinstance(doc, dict) else None
    if isinstance(cfg, dict) and isinstance(cfg.get("Env"), list):
        for e in cfg["Env"]:
            if not re.fullmatch(r"[^=]+=.*", str(e), re.S):
                errors.append("config Env entry is not KEY=VALUE: %r" % e)
    return errors


def check(family, kind, path):
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except Exception as e:
        return ["not JSON: %s" % e]
    v = image_validator(kind) if family == "image" else runtime_validator(kind)
    errors = ["%s at %s" % (e.message, "/".join(map(str, e.path))) for e in v.iter_errors(doc)]
    if family == "image":
        errors += extra_image_rules(doc)
    return errors


def selftest():
    bad = 0
    kinds = {"image-manifest-schema.json": "manifest", "image-index-schema.json": "index", "config-schema.json": "config",
             "image-layout-schema.json": "layout", "content-descriptor.json": "descriptor"}
    with open(os.path.join(IMAGE, "index.tsv")) as f:
        next(f)
        n = 0
        for line in f:
            cols = line.rstrip("\n").split("\t")
            file, schema, expected = cols[0], cols[1], cols[3]
            got = "invalid" if check("image", kinds[schema], os.path.join(IMAGE, file)) else "valid"
            n += 1
            if got != expected:
                print("selftest: %s: expected %s, validator says %s" % (file, expected, got))
                bad += 1
    for kind in ("config", "state", "features"):
        for verdict in ("good", "bad"):
            d = os.path.join(RUNTIME, "test", kind, verdict)
            if not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                got = "bad" if check("runtime", kind, os.path.join(d, name)) else "good"
                n += 1
                if got != verdict:
                    print("selftest: runtime %s/%s/%s: expected %s" % (kind, verdict, name, verdict))
                    bad += 1
    print("selftest: %d documents, %d disagreements" % (n, bad))
    return 1 if bad else 0


def main(argv):
    if argv[1:2] == ["selftest"]:
        return selftest()
    if len(argv) < 4 or argv[1] not in ("image", "runtime"):
        print(__doc__, file=sys.stderr)
        return 2
    family, kind, files = argv[1], argv[2], argv[3:]
    status = 0
    for path in files:
        for e in check(family, kind, path):
            print("%s (%s %s): %s" % (path, family, kind, e))
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
