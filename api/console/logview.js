// A run's log as a terminal: every line parsed once as it arrives (terminal.js),
// only the lines on screen in the DOM (a fixed line height, a spacer as tall as
// the whole log), follow mode that keeps the last line in view until the reader
// scrolls up, line-number links (`#L120`) and search.

import { PLAIN, renderLine, styleOf, plainText } from "./terminal.js";

const LINE_HEIGHT = 18;
const OVERSCAN = 20;

const escapeHtml = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

export class LogView {
  constructor(root) {
    this.lines = [];
    this.style = PLAIN;
    this.follow = true;
    this.matches = [];
    this.match = -1;
    this.query = "";
    this.target = null;
    this.pending = false;
    this.styles = new Map();
    root.innerHTML = `
      <div class="log-toolbar">
        <label><input type="checkbox" id="log-follow" checked> follow</label>
        <input type="search" id="log-search" placeholder="search the log" aria-label="search the log">
        <button type="button" id="log-prev" title="previous match">↑</button>
        <button type="button" id="log-next" title="next match">↓</button>
        <span id="log-matches" class="muted"></span>
        <span id="log-count" class="muted"></span>
      </div>
      <div class="log" id="log" tabindex="0" data-lines="0" data-follow="true">
        <div class="log-spacer"><div class="log-lines"></div></div>
      </div>`;
    this.viewport = root.querySelector("#log");
    this.spacer = root.querySelector(".log-spacer");
    this.body = root.querySelector(".log-lines");
    this.followBox = root.querySelector("#log-follow");
    this.count = root.querySelector("#log-count");
    this.viewport.addEventListener("scroll", () => {
      const atBottom = this.viewport.scrollTop + this.viewport.clientHeight >= this.viewport.scrollHeight - LINE_HEIGHT;
      if (atBottom !== this.follow) this.setFollow(atBottom);
      this.schedule();
    });
    this.followBox.addEventListener("change", () => {
      this.setFollow(this.followBox.checked);
      this.schedule();
    });
    const search = root.querySelector("#log-search");
    search.addEventListener("input", () => this.search(search.value));
    search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") this.step(e.shiftKey ? -1 : 1);
    });
    root.querySelector("#log-prev").addEventListener("click", () => this.step(-1));
    root.querySelector("#log-next").addEventListener("click", () => this.step(1));
    this.matchLabel = root.querySelector("#log-matches");
  }

  setFollow(on) {
    this.follow = on;
    this.followBox.checked = on;
    this.viewport.dataset.follow = String(on);
  }

  /** The number of the last line held: a resumed subscription starts after it. */
  get lastNumber() {
    return this.lines.length ? this.lines[this.lines.length - 1].n : 0;
  }

  /** Adds log lines (`{ number, text }`) in order; a line already held is skipped. */
  append(batch) {
    for (const line of batch) {
      const n = Number(line.number);
      if (n <= this.lastNumber) continue;
      const { spans, style } = renderLine(line.text, this.style);
      this.style = style;
      const entry = { n, spans, plain: null };
      this.lines.push(entry);
      if (this.query && this.text(entry).toLowerCase().includes(this.query)) this.matches.push(this.lines.length - 1);
    }
    this.schedule();
  }

  text(entry) {
    if (entry.plain === null) entry.plain = plainText(entry.spans);
    return entry.plain;
  }

  /** Scrolls to line `n` (from `#L<n>`), now or once it arrives; follow stops. */
  goTo(n) {
    this.target = n;
    this.setFollow(false);
    this.schedule();
  }

  search(query) {
    this.query = query.toLowerCase();
    this.matches = [];
    this.match = -1;
    if (this.query) this.lines.forEach((l, i) => this.text(l).toLowerCase().includes(this.query) && this.matches.push(i));
    if (this.matches.length) this.step(1);
    else this.schedule();
  }

  step(direction) {
    if (!this.matches.length) return;
    this.match = (this.match + direction + this.matches.length) % this.matches.length;
    this.setFollow(false);
    const index = this.matches[this.match];
    this.viewport.scrollTop = Math.max(0, index * LINE_HEIGHT - this.viewport.clientHeight / 2);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  classOf(style) {
    let drawn = this.styles.get(style);
    if (!drawn) {
      drawn = styleOf(style);
      this.styles.set(style, drawn);
    }
    return drawn;
  }

  render() {
    const total = this.lines.length;
    this.spacer.style.height = `${total * LINE_HEIGHT}px`;
    this.viewport.dataset.lines = String(total);
    this.count.textContent = `${total} lines`;
    if (this.target !== null) {
      const index = this.lines.findIndex((l) => l.n === this.target);
      if (index >= 0) {
        this.viewport.scrollTop = Math.max(0, index * LINE_HEIGHT - this.viewport.clientHeight / 3);
        this.highlight = this.target;
        this.target = null;
      }
    } else if (this.follow) {
      this.viewport.scrollTop = this.viewport.scrollHeight;
    }
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / LINE_HEIGHT) - OVERSCAN);
    const last = Math.min(total, Math.ceil((this.viewport.scrollTop + this.viewport.clientHeight) / LINE_HEIGHT) + OVERSCAN);
    const current = this.match >= 0 ? this.matches[this.match] : -1;
    let html = "";
    for (let i = first; i < last; i++) {
      const line = this.lines[i];
      const classes = ["line"];
      if (line.n === this.highlight) classes.push("target");
      if (i === current) classes.push("current-match");
      html += `<div class="${classes.join(" ")}" data-n="${line.n}"><a class="ln" href="#L${line.n}">${line.n}</a><span class="tx">`;
      for (const span of line.spans) {
        const { cls, css } = this.classOf(span.style);
        const text = this.query ? this.mark(span.text) : escapeHtml(span.text);
        html += cls || css ? `<span class="${cls}"${css ? ` style="${css}"` : ""}>${text}</span>` : text;
      }
      html += "</span></div>";
    }
    this.body.style.transform = `translateY(${first * LINE_HEIGHT}px)`;
    this.body.innerHTML = html;
    this.matchLabel.textContent = this.query ? `${this.matches.length ? this.match + 1 : 0} of ${this.matches.length}` : "";
  }

  mark(text) {
    const lower = text.toLowerCase();
    let out = "";
    let from = 0;
    for (let at = lower.indexOf(this.query); at >= 0; at = lower.indexOf(this.query, from)) {
      out += escapeHtml(text.slice(from, at)) + `<mark>${escapeHtml(text.slice(at, at + this.query.length))}</mark>`;
      from = at + this.query.length;
    }
    return out + escapeHtml(text.slice(from));
  }
}
