"use strict";
// A job's log: its last lines first (a 1,000,000-line log opens on its tail at once), then live through
// GET /jobs/{id}/log?follow=1; earlier lines on request; ANSI colours; #L<n> links; search; auto-scroll that
// stops while the reader is scrolled up. While following, at most KEEP lines stay on the page, so a job that
// prints for hours never freezes the tab: older ones come back with "Load earlier lines".
(() => {
  const box = document.getElementById("log");
  const earlier = document.getElementById("log-earlier");
  const follow = document.getElementById("log-follow");
  const search = document.getElementById("log-search");
  const found = document.getElementById("log-found");
  const job = box.dataset.job;
  const TAIL = Number(box.dataset.tail);
  const KEEP = 4 * TAIL;
  let first = Math.max(0, Number(box.dataset.lines) - TAIL); // lines before the first one shown
  let next = first; // lines received so far
  let stick = true; // keep the end in view
  let style = {}; // ANSI attributes carry from line to line, as in a terminal
  let hit = null;
  let reading = null; // the follow request, aborted while the page sits in the back-forward cache (app.js)

  const SGR = /\x1b\[([0-9;]*)m/g;
  const OTHER = /\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][A-Za-z0-9]|[=>NOMDEHc78])/g;

  function sgr(codes) {
    const numbers = codes === "" ? [0] : codes.split(";").map(Number);
    let s = { ...style };
    for (let i = 0; i < numbers.length; i++) {
      const n = numbers[i];
      if (n === 0) s = {};
      else if (n === 1) s.bold = true;
      else if (n === 2) s.dim = true;
      else if (n === 3) s.italic = true;
      else if (n === 4) s.underline = true;
      else if (n === 22) s.bold = s.dim = false;
      else if (n === 23) s.italic = false;
      else if (n === 24) s.underline = false;
      else if (n >= 30 && n <= 37) s.fg = n - 30;
      else if (n >= 90 && n <= 97) s.fg = n - 82;
      else if (n === 39) delete s.fg;
      else if (n >= 40 && n <= 47) s.bg = n - 40;
      else if (n >= 100 && n <= 107) s.bg = n - 92;
      else if (n === 49) delete s.bg;
      else if ((n === 38 || n === 48) && numbers[i + 1] === 5) {
        s[n === 38 ? "fg" : "bg"] = numbers[i + 2];
        i += 2;
      } else if ((n === 38 || n === 48) && numbers[i + 1] === 2) {
        s[n === 38 ? "fg" : "bg"] = `rgb(${numbers[i + 2]},${numbers[i + 3]},${numbers[i + 4]})`;
        i += 4;
      }
    }
    style = s;
  }

  function colour(value) {
    if (typeof value === "string") return value;
    if (value < 232) {
      const v = value - 16;
      const level = (x) => (x ? 55 + x * 40 : 0);
      return `rgb(${level(Math.floor(v / 36))},${level(Math.floor(v / 6) % 6)},${level(v % 6)})`;
    }
    const grey = 8 + (value - 232) * 10;
    return `rgb(${grey},${grey},${grey})`;
  }

  function piece(line, text) {
    text = text.replace(OTHER, "");
    if (!text) return;
    const s = style;
    if (!s.bold && !s.dim && !s.italic && !s.underline && s.fg === undefined && s.bg === undefined) {
      line.append(text);
      return;
    }
    const span = document.createElement("span");
    span.textContent = text;
    for (const name of ["bold", "dim", "italic", "underline"]) if (s[name]) span.classList.add(name);
    for (const [key, property] of [["fg", "color"], ["bg", "backgroundColor"]]) {
      if (s[key] === undefined) continue;
      if (typeof s[key] === "number" && s[key] < 16) span.classList.add(`${key}${s[key]}`);
      else span.style[property] = colour(s[key]);
    }
    line.append(span);
  }

  function render(number, text) {
    const line = document.createElement("div");
    line.className = "line";
    line.id = `L${number}`;
    const link = document.createElement("a");
    link.className = "n";
    link.href = `#L${number}`;
    link.textContent = number;
    line.append(link);
    const redrawn = text.replace(/\r$/, "").lastIndexOf("\r"); // a progress bar's \r: what the terminal shows
    if (redrawn >= 0) text = text.slice(redrawn + 1);
    let last = 0;
    SGR.lastIndex = 0;
    for (let m = SGR.exec(text); m; m = SGR.exec(text)) {
      piece(line, text.slice(last, m.index));
      sgr(m[1]);
      last = SGR.lastIndex;
    }
    piece(line, text.slice(last));
    return line;
  }

  function showEarlier() {
    earlier.hidden = first === 0;
    earlier.textContent = `Load ${Math.min(TAIL, first)} earlier lines (${first} not shown)`;
  }

  function add(lines) {
    if (!lines.length) return;
    const batch = document.createDocumentFragment();
    for (const text of lines) batch.append(render(++next, text));
    box.append(batch);
    if (stick && box.childElementCount > KEEP) {
      const drop = box.childElementCount - KEEP;
      for (let i = 0; i < drop; i++) box.firstElementChild.remove();
      first += drop;
      showEarlier();
    }
    if (stick) box.scrollTop = box.scrollHeight;
  }

  async function loadEarlier() {
    const from = Math.max(0, first - TAIL);
    const response = await fetch(`/jobs/${job}/log?offset=${from}&limit=${first - from}`);
    if (!response.ok) return;
    const lines = (await response.text()).split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    const carried = style;
    style = {};
    const batch = document.createDocumentFragment();
    lines.forEach((text, i) => batch.append(render(from + i + 1, text)));
    style = carried;
    const height = box.scrollHeight;
    box.prepend(batch);
    box.scrollTop += box.scrollHeight - height;
    first = from;
    showEarlier();
  }

  async function reach() {
    const target = Number((location.hash.match(/^#L([0-9]+)$/) || [])[1] || 0);
    if (!target || target > next) return;
    stick = false;
    follow.hidden = false;
    while (target <= first) await loadEarlier();
    const line = document.getElementById(`L${target}`);
    if (line) line.scrollIntoView({ block: "center" });
  }

  async function stream() {
    reading = new AbortController();
    const response = await fetch(`/jobs/${job}/log?follow=1&offset=${next}`, { signal: reading.signal });
    if (response.status === 404) return;
    if (!response.ok) throw new Error(`${response.status}`);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let rest = "";
    let reached = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += decoder.decode(value, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop();
      add(lines);
      if (!reached) {
        reached = true;
        reach();
      }
    }
    add(rest ? [rest] : []);
    box.dataset.ended = "1";
  }

  async function keepFollowing() {
    for (;;) {
      try {
        await stream();
        return;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 2000)); // lost the server: go on from `next`
      }
    }
  }

  box.addEventListener("scroll", () => {
    stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 24;
    follow.hidden = stick;
  });
  follow.addEventListener("click", () => {
    stick = true;
    box.scrollTop = box.scrollHeight;
    follow.hidden = true;
  });
  earlier.addEventListener("click", loadEarlier);
  window.addEventListener("pagehide", () => reading && reading.abort()); // keepFollowing goes on when shown again
  window.addEventListener("hashchange", reach);

  search.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    const query = search.value.toLowerCase();
    if (hit) hit.classList.remove("hit");
    if (!query) return;
    const text = (line) => line.textContent.slice(line.firstChild.textContent.length).toLowerCase();
    const lines = Array.from(box.children);
    const matches = lines.filter((line) => text(line).includes(query));
    hit = matches.find((line) => !hit || lines.indexOf(line) > lines.indexOf(hit)) || matches[0] || null;
    found.textContent = matches.length ? `${matches.length} matching lines shown` : "no match in the lines shown";
    if (!hit) return;
    hit.classList.add("hit");
    stick = false;
    follow.hidden = false;
    hit.scrollIntoView({ block: "center" });
  });

  showEarlier();
  keepFollowing();
})();
