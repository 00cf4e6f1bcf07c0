// Preloaded (`node --require`) into the MCP conformance suite when it runs
// against Warden. The suite sends no credentials of its own, and Warden
// authenticates every MCP request with a task token, so this adds
// `Authorization: Bearer $WARDEN_CONFORMANCE_TOKEN` to every request that
// goes to $WARDEN_CONFORMANCE_ORIGIN. It changes nothing else: the suite's
// Host, Origin and other headers reach Warden as the suite set them.
//
// The suite sends requests with Node's fetch and with undici's request API;
// both use undici's global dispatcher, which is wrapped here.
"use strict";

const path = require("node:path");

const undici = require(path.join(__dirname, "..", "node_modules", "undici"));

const token = process.env.WARDEN_CONFORMANCE_TOKEN;
const origin = process.env.WARDEN_CONFORMANCE_ORIGIN;
if (!token || !origin) {
  throw new Error(
    "set WARDEN_CONFORMANCE_TOKEN (a task token) and WARDEN_CONFORMANCE_ORIGIN " +
      "(Warden's origin, e.g. http://127.0.0.1:8787) before preloading this file",
  );
}
const authorization = `Bearer ${token}`;

function withBearer(headers) {
  if (Array.isArray(headers)) {
    const remaining = [];
    for (let i = 0; i + 1 < headers.length; i += 2) {
      if (String(headers[i]).toLowerCase() !== "authorization") {
        remaining.push(headers[i], headers[i + 1]);
      }
    }
    return [...remaining, "authorization", authorization];
  }
  const remaining = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (name.toLowerCase() !== "authorization") {
      remaining[name] = value;
    }
  }
  remaining.authorization = authorization;
  return remaining;
}

function targetsWarden(options) {
  try {
    return new URL(String(options.origin)).origin === origin;
  } catch {
    return false;
  }
}

undici.setGlobalDispatcher(
  undici.getGlobalDispatcher().compose((dispatch) => (options, handler) => {
    if (!targetsWarden(options)) {
      return dispatch(options, handler);
    }
    return dispatch({ ...options, headers: withBearer(options.headers) }, handler);
  }),
);
