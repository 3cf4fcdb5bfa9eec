# Tollgate's Python hook worker. Tollgate starts a few of these
# (`python3 -u bootstrap.py DIR FUNC...`), each importing the operator's
# modules (LiteLLM's `custom_auth: module.function`, resolved relative to
# the config file's directory DIR) and answering one call at a time:
# one JSON object per line on stdin, one per line back on the protocol
# stream. The user's print()s must not corrupt that stream, so the
# protocol keeps a private duplicate of fd 1 and fd 1 itself (and
# sys.stdout) is pointed at stderr, which Tollgate copies to its log.
import __future__
import asyncio
import base64
import enum
import json
import os
import sys
import traceback
import types

_proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr


def _jsonable(o):
    if isinstance(o, enum.Enum):
        return o.value
    return str(o)


def _finite(o, path="result"):
    """The answer with every float finite: inf (LiteLLM's "no limit", e.g.
    max_budget=float("inf")) becomes None; NaN or -inf is an error (the
    call is refused), never a line Tollgate cannot read."""
    if isinstance(o, float):
        if o != o or o == float("-inf"):
            raise ValueError("%s is %r: not a number a hook may return" % (path, o))
        return None if o == float("inf") else o
    if isinstance(o, dict):
        return {k: _finite(v, "%s.%s" % (path, k)) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v, "%s[%d]" % (path, i)) for i, v in enumerate(o)]
    return o


def _send(obj):
    _proto.write(json.dumps(obj, default=_jsonable, allow_nan=False) + "\n")
    _proto.flush()


class _Model:
    """Minimal stand-in for LiteLLM's pydantic models: keyword fields,
    dict()/model_dump() and LiteLLM's json() (which returns a dict)."""

    _fields = ()

    def __init__(self, **kw):
        for f in self._fields:
            setattr(self, f, None)
        for k, v in kw.items():
            setattr(self, k, v)

    def model_dump(self, **_):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    dict = model_dump
    json = model_dump

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.model_dump())


class UserAPIKeyAuth(_Model):
    _fields = ("api_key", "token", "key_name", "key_alias", "spend", "max_budget", "expires",
               "models", "aliases", "config", "user_id", "team_id", "org_id",
               "max_parallel_requests", "metadata", "tpm_limit", "rpm_limit",
               "budget_duration", "soft_budget", "user_role", "user_email",
               "team_alias", "team_models", "team_max_budget", "team_tpm_limit",
               "team_rpm_limit", "team_metadata", "end_user_id", "allowed_model_region")


class GenerateKeyRequest(_Model):
    _fields = ("key_alias", "duration", "models", "spend", "max_budget", "user_id",
               "team_id", "max_parallel_requests", "metadata", "tpm_limit", "rpm_limit",
               "budget_duration", "allowed_cache_controls", "soft_budget", "config",
               "permissions", "model_max_budget", "model_rpm_limit", "model_tpm_limit",
               "guardrails", "blocked", "aliases", "key", "budget_id", "tags",
               "enforced_params", "organization_id", "send_invite_email")


class LitellmUserRoles(str, enum.Enum):
    """LiteLLM's user roles (litellm.proxy._types.LitellmUserRoles)."""

    PROXY_ADMIN = "proxy_admin"
    PROXY_ADMIN_VIEW_ONLY = "proxy_admin_viewer"
    ORG_ADMIN = "org_admin"
    INTERNAL_USER = "internal_user"
    INTERNAL_USER_VIEW_ONLY = "internal_user_viewer"
    TEAM = "team"
    CUSTOMER = "customer"

    def __str__(self):
        return str(self.value)


class HTTPException(Exception):
    """Minimal stand-in for fastapi.HTTPException."""

    def __init__(self, status_code, detail=None, headers=None):
        super().__init__(status_code, detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers

    def __str__(self):
        return "%s: %s" % (self.status_code, self.detail)


class ProxyException(Exception):
    def __init__(self, message="", type="auth_error", param=None, code=401, **_):
        super().__init__(message)
        self.message, self.type, self.param, self.code = message, type, param, code


class _Headers(dict):
    def get(self, k, default=None):
        return dict.get(self, k.lower(), default)

    def __getitem__(self, k):
        return dict.__getitem__(self, k.lower())

    def __contains__(self, k):
        return dict.__contains__(self, k.lower())


class _URL(str):
    def __new__(cls, url, path, query):
        s = str.__new__(cls, url)
        s.path, s.query = path, query
        return s


class Address(tuple):
    """Starlette's request.client: (host, port) with names."""

    def __new__(cls, host, port):
        return tuple.__new__(cls, (host, port))

    host = property(lambda self: self[0])
    port = property(lambda self: self[1])


def _body(d):
    b64 = d.get("body_b64")
    if b64:
        return base64.b64decode(b64)
    return (d.get("body") or "").encode()


def _client(d):
    c = d.get("client")
    if not c or not c.get("host"):
        return None
    return Address(c["host"], c.get("port") or 0)


class Request:
    """Minimal stand-in for fastapi.Request."""

    def __init__(self, d):
        self.method = d.get("method", "")
        self.url = _URL(d.get("url", ""), d.get("path", ""), d.get("query", ""))
        self.headers = _Headers((k.lower(), v) for k, v in (d.get("headers") or {}).items())
        self.query_params = dict(d.get("query_params") or {})
        self._body = _body(d)
        self.client = _client(d)

    async def body(self):
        return self._body

    async def json(self):
        return json.loads(self._body or b"null")


def _stand_ins():
    try:
        from litellm.proxy import _types  # noqa: F401
        real_litellm = True
    except Exception:
        real_litellm = False
        for name in ("litellm", "litellm.proxy", "litellm.proxy._types"):
            sys.modules.setdefault(name, types.ModuleType(name))
        t = sys.modules["litellm.proxy._types"]
        t.UserAPIKeyAuth, t.GenerateKeyRequest, t.ProxyException = UserAPIKeyAuth, GenerateKeyRequest, ProxyException
        t.LitellmUserRoles = LitellmUserRoles
        sys.modules["litellm"].proxy = sys.modules["litellm.proxy"]
        sys.modules["litellm.proxy"]._types = t
    try:
        import fastapi  # noqa: F401
        real_fastapi = True
    except Exception:
        real_fastapi = False
        m = sys.modules.setdefault("fastapi", types.ModuleType("fastapi"))
        m.Request, m.HTTPException = Request, HTTPException
    return real_litellm, real_fastapi


REAL_LITELLM, REAL_FASTAPI = _stand_ins()
_modules = {}


def _load(directory, dotted):
    """module.function → the function, the module file resolved against the
    config's directory as LiteLLM does. Annotations are compiled lazily so
    an annotation naming an unimported type (Request) does not fail."""
    mod_name, _, fn_name = dotted.rpartition(".")
    if not mod_name:
        raise ImportError("%r is not module.function" % dotted)
    mod = _modules.get(mod_name)
    if mod is None:
        path = os.path.join(directory, *mod_name.split(".")) + ".py"
        with open(path, encoding="utf-8") as f:
            src = f.read()
        code = compile(src, path, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
        mod = types.ModuleType(mod_name)
        mod.__file__ = path
        sys.modules[mod_name] = mod
        exec(code, mod.__dict__)
        _modules[mod_name] = mod
    fn = getattr(mod, fn_name, None)
    if fn is None:
        raise AttributeError("module %s (%s) has no function %s" % (mod_name, mod.__file__, fn_name))
    return fn


def _request(d):
    if not REAL_FASTAPI:
        return Request(d)
    from fastapi import Request as FR

    body = _body(d)

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": d.get("method", ""), "path": d.get("path", ""),
             "query_string": (d.get("query") or "").encode(), "scheme": "http", "server": ("tollgate", 80),
             "headers": [(k.lower().encode(), str(v).encode()) for k, v in (d.get("headers") or {}).items()]}
    c = _client(d)
    if c is not None:
        scope["client"] = (c.host, c.port)
    return FR(scope, receive)


def _plain(v):
    for m in ("model_dump", "dict"):
        if hasattr(v, m) and callable(getattr(v, m)):
            try:
                return getattr(v, m)()
            except Exception:
                pass
    return v


def _status(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _raised(e):
    """(message, status) for an exception: as LiteLLM's auth does, an
    HTTPException gives its status_code and detail, a ProxyException its
    code and message; anything else no status (Tollgate's 401/400)."""
    http_types = tuple(t for t in (HTTPException, getattr(sys.modules.get("fastapi"), "HTTPException", None),
                                   getattr(sys.modules.get("starlette.exceptions"), "HTTPException", None))
                       if isinstance(t, type))
    proxy_types = tuple(t for t in (ProxyException, getattr(sys.modules.get("litellm.proxy._types"), "ProxyException", None))
                        if isinstance(t, type))
    if isinstance(e, http_types):
        detail = getattr(e, "detail", None)
        return (str(detail) if detail is not None else str(e)), _status(getattr(e, "status_code", None))
    if isinstance(e, proxy_types):
        return str(getattr(e, "message", "") or e), _status(getattr(e, "code", None))
    return str(e), None


def main():
    directory, names = sys.argv[1], sys.argv[2:]
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        fns = {n: _load(directory, n) for n in names}
    except BaseException:
        _send({"ready": False, "error": traceback.format_exc()})
        return 3
    _send({"ready": True, "litellm": REAL_LITELLM, "fastapi": REAL_FASTAPI})
    loop = asyncio.new_event_loop()
    for line in sys.stdin:
        if not line.strip():
            continue
        call = json.loads(line)
        try:
            fn = fns[call["fn"]]
            if call["kind"] == "auth":
                out = fn(_request(call.get("request") or {}), call.get("api_key", ""))
            else:
                cls = sys.modules["litellm.proxy._types"].GenerateKeyRequest
                data = call.get("data") or {}
                try:
                    arg = cls(**data)
                except Exception:
                    arg = GenerateKeyRequest(**data)
                out = fn(arg)
            if asyncio.iscoroutine(out):
                out = loop.run_until_complete(out)
            line = json.dumps({"id": call["id"], "ok": True, "result": _finite(_plain(out)),
                               "type": type(out).__name__}, default=_jsonable, allow_nan=False)
            _proto.write(line + "\n")
            _proto.flush()
        except Exception as e:
            msg, status = _raised(e)
            _send({"id": call["id"], "ok": False, "error": msg, "type": type(e).__name__,
                   "status": status, "traceback": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
