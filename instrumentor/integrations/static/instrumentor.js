/*! instrumentor.js: send frontend events through your backend. No dependencies.
 *
 *   <script src="/analytics/instrumentor.js" defer></script>
 *   instrumentor.track("Search_Performed");           // Promise<boolean>, never rejects
 *   instrumentor.track("Report_Viewed", {groupId: "proj_1"});  // needs authorize_group
 *
 * Served by the backend's own route, it posts to `track` beside itself. Served from anywhere
 * else (a CDN, a bundle), it needs data-endpoint="/analytics/track" on its script tag, or
 * instrumentor.endpoint set before the first track(); until then track() resolves to false and
 * says why on the console, once.
 *
 * Where the server wants a CSRF token too, name the header and where the token is:
 *   data-csrf-header="X-CSRFToken" with data-csrf-cookie="csrftoken" (Django) or
 *   data-csrf-token="..." (e.g. Flask-WTF's csrf_token()).
 *
 * The browser sends only the event name; the server checks it against the tracking plan and
 * adds the identity it knows. track() never throws and never rejects: it resolves to true when
 * the server accepted the event (202), or, with the sendBeacon fallback, when the browser queued
 * it (a beacon's answer cannot be read); to false otherwise.
 *
 * Served compact: comments stay on lines of their own (the server drops them).
 */
(function (root) {
  "use strict";
  var script = root.document && root.document.currentScript;
  var api = { track: track, endpoint: null, version: 2 };
  var csrfHeader = null;
  var warned = false;
  try {
    var src = script && script.src ? new URL(script.src) : null;
    if (script && script.getAttribute("data-endpoint")) {
      api.endpoint = script.getAttribute("data-endpoint");
    } else if (src && /\/instrumentor\.js$/.test(src.pathname)) {
      // served by the backend's route, beside its endpoint
      api.endpoint = new URL("track", src).pathname;
    }
    csrfHeader = script && script.getAttribute("data-csrf-header");
  } catch (ignored) {}

  function csrfToken() {
    var token = script.getAttribute("data-csrf-token");
    var name = script.getAttribute("data-csrf-cookie");
    var cookies = name ? root.document.cookie.split(";") : [];
    for (var i = 0; i < cookies.length; i++) {
      var pair = cookies[i].split("=");
      if (pair[0].trim() === name) { token = decodeURIComponent(pair.slice(1).join("=")); }
    }
    return token;
  }

  function done(value) {
    return typeof Promise === "function" ? Promise.resolve(value) : undefined;
  }

  function track(name, options) {
    try {
      var endpoint = api.endpoint;
      if (!endpoint) {
        if (!warned && root.console) {
          warned = true;
          root.console.warn("instrumentor.js: no endpoint; add data-endpoint=\"/analytics/track\" to its script tag");
        }
        return done(false);
      }
      var payload = { event: String(name) };
      if (options && options.groupId != null) {
        payload.group_id = String(options.groupId);
      }
      var body = JSON.stringify(payload);
      var headers = { "Content-Type": "application/json" };
      if (csrfHeader) { headers[csrfHeader] = csrfToken() || ""; }
      if (typeof root.fetch === "function") {
        return root
          .fetch(endpoint, {
            method: "POST",
            headers: headers,
            body: body,
            credentials: "same-origin",
            keepalive: true
          })
          .then(function (response) { return response.status === 202; })
          .catch(function () { return false; });
      }
      var nav = root.navigator;
      // beacons send no header, so not when a CSRF header is wanted; true means queued
      if (!csrfHeader && nav && typeof nav.sendBeacon === "function") {
        return done(nav.sendBeacon(endpoint, new Blob([body], { type: "application/json" })));
      }
    } catch (ignored) {}
    return done(false);
  }

  root.instrumentor = api;
})(typeof window !== "undefined" ? window : this);
