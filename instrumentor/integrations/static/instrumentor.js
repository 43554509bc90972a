/*! instrumentor.js: send frontend events through your backend. No dependencies.
 *
 *   <script src="/analytics/instrumentor.js" data-endpoint="/analytics/track" defer></script>
 *   instrumentor.track("Search_Performed");           // Promise<boolean>, never rejects
 *   instrumentor.track("Report_Viewed", {groupId: "proj_1"});  // needs authorize_group
 *
 * The browser sends only the event name; the server checks it against the tracking plan and
 * adds the identity it knows. track() never throws and never rejects: when the endpoint is
 * down or refuses, the promise resolves to false.
 */
(function (root) {
  "use strict";
  var script = root.document && root.document.currentScript;
  var endpoint = "/analytics/track";
  try {
    if (script && script.getAttribute("data-endpoint")) {
      endpoint = script.getAttribute("data-endpoint");
    } else if (script && script.src) {
      endpoint = new URL("track", script.src).pathname; // served beside its endpoint
    }
  } catch (ignored) {}

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
      if (typeof root.fetch === "function") {
        return root
          .fetch(endpoint, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
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
      if (nav && typeof nav.sendBeacon === "function") {
        return done(nav.sendBeacon(endpoint, new Blob([body], { type: "application/json" })));
      }
    } catch (ignored) {}
    return done(false);
  }

  root.instrumentor = { track: track, endpoint: endpoint, version: 1 };
})(typeof window !== "undefined" ? window : this);
