"use strict";
// Every page: one EventSource of job changes (GET /ui/events); the regions marked data-live are read again
// from the server when a job changes, the tab's title and favicon with them. Buttons and the Run form call the
// JSON API. The banner says when the server is lost; EventSource reconnects with Last-Event-ID by itself.
(() => {
  const banner = document.getElementById("connection");
  const log = document.getElementById("log");
  let pending = null;
  let lost = false;
  let events = null;

  async function refresh() {
    pending = null;
    let response;
    try {
      response = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
    } catch {
      return;
    }
    if (!response.ok || !response.headers.get("content-type").startsWith("text/html")) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const region of document.querySelectorAll("[data-live]")) {
      const update = fresh.getElementById(region.id);
      if (update && update.innerHTML !== region.innerHTML) region.replaceWith(update);
    }
    document.title = fresh.title;
    const icon = fresh.querySelector("link[rel=icon]");
    if (icon) document.querySelector("link[rel=icon]").href = icon.href;
    tick();
  }

  function soon() {
    if (!pending) pending = setTimeout(refresh, 250);
  }

  function connect() {
    // After the last change the page shows; on a reconnect the browser's Last-Event-ID takes over.
    const since = document.body.dataset.since;
    events = new EventSource(since ? `/ui/events?after=${encodeURIComponent(since)}` : "/ui/events");
    events.addEventListener("open", () => {
      banner.textContent = "";
      banner.className = "";
      if (lost) soon(); // what changed while the server was away
      lost = false;
    });
    events.addEventListener("error", () => {
      lost = true;
      banner.textContent = "Lost the server: reconnecting…";
      banner.className = "lost";
      if (events.readyState === EventSource.CLOSED) setTimeout(connect, 3000); // refused: try again ourselves
    });
    events.addEventListener("job", (event) => {
      const change = JSON.parse(event.data);
      if (!log || change.job === log.dataset.job) soon();
    });
  }

  function span(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return `${seconds} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  function tick() {
    const now = Date.now() / 1000;
    for (const time of document.querySelectorAll("time[data-ago]")) {
      const seconds = now - Number(time.dataset.ago);
      time.textContent = seconds >= 1 ? `${span(seconds)} ago` : "just now";
    }
    for (const bar of document.querySelectorAll("progress[data-expected]")) {
      const elapsed = now - Number(bar.dataset.started);
      const expected = Number(bar.dataset.expected);
      bar.value = Math.min(1, elapsed / expected);
      const eta = bar.nextElementSibling;
      if (eta) eta.textContent = elapsed < expected ? `ETA ${span(expected - elapsed)}` : "taking longer than usual";
    }
  }

  async function call(url, method, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = body;
    }
    const response = await fetch(url, init);
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
    return answer;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-post], button[data-rerun]");
    if (!button) return;
    const said = button.parentElement.querySelector("output");
    button.disabled = true;
    try {
      if (button.dataset.post) {
        await call(button.dataset.post, "POST");
        soon();
      } else {
        const job = await call(button.dataset.rerun, "PATCH", button.dataset.body);
        location.href = `/ui/jobs/${job.id}`;
      }
    } catch (error) {
      if (said) said.textContent = error.message;
      button.disabled = false;
    }
  });

  const form = document.getElementById("run");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const said = form.querySelector("output");
      const env = {};
      for (const line of form.elements.params.value.split("\n")) {
        const text = line.trim();
        if (!text) continue;
        const equals = text.indexOf("=");
        if (equals < 1) {
          said.textContent = `not NAME=value: ${text}`;
          return;
        }
        env[text.slice(0, equals)] = text.slice(equals + 1);
      }
      const body = { env };
      if (form.elements.commit.value.trim()) body.commit = form.elements.commit.value.trim();
      const path = `/repos/${encodeURIComponent(form.dataset.repo)}/${encodeURIComponent(form.dataset.scenario)}`;
      try {
        const job = await call(path, "PATCH", JSON.stringify(body));
        location.href = `/ui/jobs/${job.id}`;
      } catch (error) {
        said.textContent = error.message;
      }
    });
  }

  document.addEventListener("keydown", (event) => {
    const search = document.getElementById("log-search");
    if (event.key === "/" && search && document.activeElement.tagName !== "INPUT" &&
        document.activeElement.tagName !== "TEXTAREA") {
      event.preventDefault();
      search.focus();
    }
  });

  // A page kept in the back-forward cache must not keep its stream: a browser opens at most 6 connections to
  // one server over HTTP/1.1, and a few cached pages would stall every request of the page in front.
  window.addEventListener("pagehide", () => events && events.close());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && events) {
      connect();
      soon();
    }
  });
  if (!document.querySelector("form.signin")) connect(); // the sign-in form has no job to show
  setInterval(tick, 1000);
})();
