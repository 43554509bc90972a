/*! instrumentor.js: send frontend events through your backend. No dependencies.
 *
 *   <script src="/analytics/instrumentor.js" data-endpoint="/analytics/track" defer></script>
 *   instrumentor.track("Search_Performed");           // Promise<boolean>, never rejects
 *   instrumentor.track("Report_Viewed", {groupId: "proj_1"});  // needs authorize_group
 *
 * Where the server wants a CSRF token too, name the header and where the token is:
 *   data-csrf-header="X-CSRFToken" with data-csrf-cookie="csrftoken" (Django) or
 *   data-csrf-token="..." (e.g. Flask-WTF's csrf_token()).
 *
 * The browser sends only the event name; the server checks it against the tracking plan and
 * adds the identity it knows. track() never throws and never rejects: when the endpoint is
 * down or refuses, the promise resolves to false.
 */
(function (root) {
  "use strict";
  var script = root.document && root.document.currentScript;
  var endpoint = "/analytics/track";
  var csrfHeader = null;
  try {
    if (script && script.getAttribute("data-endpoint")) {
      endpoint = script.getAttribute("data-endpoint");
    } else if (script && script.src) {
      endpoint = new URL("track", script.src).pathname; // served beside its endpoint
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
          .then(
            function (response) { return response.status === 202; },
            function () { return false; }
          );
      }
      var nav = root.navigator;
      if (!csrfHeader && nav && typeof nav.sendBeacon === "function") { // beacons send no header
        return done(nav.sendBeacon(endpoint, new Blob([body], { type: "application/json" })));
      }
    } catch (ignored) {}
    return done(false);
  }

  root.instrumentor = { track: track, endpoint: endpoint, version: 1 };
})(typeof window !== "undefined" ? window : this);
