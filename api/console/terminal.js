// What a terminal does with one line of a job's output, as pure functions: ANSI
// SGR escapes (colours, bold, italic, underline, inverse) become styled spans, a
// carriage return moves back to column 0 so what follows overwrites the line (a
// progress bar redrawn in place), and every other control sequence is dropped.
// The style carries from one line to the next, as in a terminal.

/** The style before any escape: the terminal's defaults. */
export const PLAIN = Object.freeze({ fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false });

const ESC = "\x1b";

/**
 * Splits `text` into tokens: `{ text }`, `{ sgr: [numbers] }`, `{ cr: true }`,
 * `{ bs: true }`, `{ erase: mode }` (CSI K) and `{ column: n }` (CSI G). Other
 * escapes (cursor moves, OSC titles) are dropped.
 */
export function tokenize(text) {
  const tokens = [];
  let plain = "";
  const flush = () => {
    if (plain) tokens.push({ text: plain });
    plain = "";
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ESC) {
      flush();
      const next = text[i + 1];
      if (next === "[") {
        let j = i + 2;
        while (j < text.length && !(text.charCodeAt(j) >= 0x40 && text.charCodeAt(j) <= 0x7e)) j++;
        const params = text.slice(i + 2, j);
        const final = text[j];
        if (final === "m") tokens.push({ sgr: params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p))) });
        else if (final === "K") tokens.push({ erase: Number(params || 0) });
        else if (final === "G") tokens.push({ column: Math.max(0, Number(params || 1) - 1) });
        i = j;
      } else if (next === "]") {
        // An OSC (a window title, a hyperlink) ends with BEL or ESC \.
        let j = i + 2;
        while (j < text.length && text[j] !== "\x07" && !(text[j] === ESC && text[j + 1] === "\\")) j++;
        i = text[j] === ESC ? j + 1 : j;
      } else {
        i += 1;
      }
    } else if (c === "\r") {
      flush();
      tokens.push({ cr: true });
    } else if (c === "\b") {
      flush();
      tokens.push({ bs: true });
    } else if (c === "\t") {
      plain += "\t";
    } else if (c < " " && c !== "\t") {
      // Other C0 controls (bell, form feed) print nothing.
    } else {
      plain += c;
    }
  }
  flush();
  return tokens;
}

const xterm = (n) => {
  if (n < 16) return { index: n };
  if (n < 232) {
    const v = [0, 95, 135, 175, 215, 255];
    const i = n - 16;
    return { rgb: [v[Math.floor(i / 36)], v[Math.floor(i / 6) % 6], v[i % 6]] };
  }
  const g = 8 + (n - 232) * 10;
  return { rgb: [g, g, g] };
};

/** The style after the SGR parameters `params` (e.g. `[1, 31]`) on top of `style`. */
export function applySgr(style, params) {
  const s = { ...style };
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    if (p === 0) Object.assign(s, PLAIN);
    else if (p === 1) s.bold = true;
    else if (p === 2) s.dim = true;
    else if (p === 3) s.italic = true;
    else if (p === 4) s.underline = true;
    else if (p === 7) s.inverse = true;
    else if (p === 21 || p === 22) s.bold = s.dim = false;
    else if (p === 23) s.italic = false;
    else if (p === 24) s.underline = false;
    else if (p === 27) s.inverse = false;
    else if (p >= 30 && p <= 37) s.fg = { index: p - 30 };
    else if (p >= 90 && p <= 97) s.fg = { index: p - 90 + 8 };
    else if (p >= 40 && p <= 47) s.bg = { index: p - 40 };
    else if (p >= 100 && p <= 107) s.bg = { index: p - 100 + 8 };
    else if (p === 39) s.fg = null;
    else if (p === 49) s.bg = null;
    else if (p === 38 || p === 48) {
      let colour = null;
      if (params[i + 1] === 5 && i + 2 < params.length) {
        colour = xterm(params[i + 2] & 255);
        i += 2;
      } else if (params[i + 1] === 2 && i + 4 < params.length) {
        colour = { rgb: [params[i + 2] & 255, params[i + 3] & 255, params[i + 4] & 255] };
        i += 4;
      } else {
        break;
      }
      if (p === 38) s.fg = colour;
      else s.bg = colour;
    }
  }
  return Object.freeze(s);
}

/**
 * How a style is drawn: `cls`, CSS classes (`fg1` … `fg15`, `bg0` …, `b`, `dim`,
 * `i`, `u`), and `css`, an inline style for 256-colour and true-colour values.
 */
export function styleOf(style) {
  let fg = style.fg;
  let bg = style.bg;
  if (style.inverse) [fg, bg] = [bg ?? { inverseDefault: "bg" }, fg ?? { inverseDefault: "fg" }];
  const cls = [];
  let css = "";
  const paint = (colour, prefix, property) => {
    if (!colour) return;
    if (colour.inverseDefault) cls.push(`${prefix}-default-${colour.inverseDefault}`);
    else if (colour.index !== undefined) cls.push(`${prefix}${colour.index}`);
    else css += `${property}:rgb(${colour.rgb.join(",")});`;
  };
  paint(fg, "fg", "color");
  paint(bg, "bg", "background-color");
  if (style.bold) cls.push("b");
  if (style.dim) cls.push("dim");
  if (style.italic) cls.push("i");
  if (style.underline) cls.push("u");
  return { cls: cls.join(" "), css };
}

const sameStyle = (a, b) => a === b;

/**
 * One line as a terminal shows it, starting in `style`: `spans` (each
 * `{ text, style }`, neighbours of one style merged) and the `style` in force at
 * its end. A `\r` returns to column 0 and the text after it overwrites what was
 * there; `ESC[K` erases to the end of the line.
 */
export function renderLine(text, style = PLAIN) {
  const tokens = tokenize(text);
  // The fast path: no cursor movement, so the spans are the text runs in order.
  if (!tokens.some((t) => t.cr || t.bs || t.erase !== undefined || t.column !== undefined)) {
    const spans = [];
    for (const t of tokens) {
      if (t.sgr) style = applySgr(style, t.sgr);
      else if (spans.length && sameStyle(spans[spans.length - 1].style, style)) spans[spans.length - 1].text += t.text;
      else spans.push({ text: t.text, style });
    }
    let col = 0;
    for (const s of spans) {
      s.text = expandTabs(s.text, col);
      col += s.text.length;
    }
    return { spans, style };
  }
  const cells = [];
  let col = 0;
  for (const t of tokens) {
    if (t.sgr) style = applySgr(style, t.sgr);
    else if (t.cr) col = 0;
    else if (t.bs) col = Math.max(0, col - 1);
    else if (t.column !== undefined) col = t.column;
    else if (t.erase !== undefined) {
      if (t.erase === 0) cells.length = Math.min(cells.length, col);
      else if (t.erase === 1) for (let k = 0; k <= col && k < cells.length; k++) cells[k] = { ch: " ", style };
      else cells.length = 0;
    } else {
      for (const ch of t.text) {
        if (ch === "\t") {
          const next = (Math.floor(col / 8) + 1) * 8;
          while (col < next) cells[col++] = { ch: " ", style };
        } else {
          cells[col++] = { ch, style };
        }
      }
    }
  }
  const spans = [];
  for (let k = 0; k < cells.length; k++) {
    const cell = cells[k] ?? { ch: " ", style: PLAIN };
    const last = spans[spans.length - 1];
    if (last && sameStyle(last.style, cell.style)) last.text += cell.ch;
    else spans.push({ text: cell.ch, style: cell.style });
  }
  return { spans, style };
}

function expandTabs(text, start) {
  if (!text.includes("\t")) return text;
  let out = "";
  let col = start;
  for (const ch of text) {
    if (ch === "\t") {
      const next = (Math.floor(col / 8) + 1) * 8;
      out += " ".repeat(next - col);
      col = next;
    } else {
      out += ch;
      col++;
    }
  }
  return out;
}

/** The text a line shows, without its styles: what search looks in. */
export const plainText = (spans) => spans.map((s) => s.text).join("");
