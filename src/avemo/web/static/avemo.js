// avemo's pages: the timeline (SVG drawn here, no library), the face box over a player, and the
// calls to the server's API. Plain browser JavaScript, no build step.
"use strict";

const EMOTIONS = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"];
const SENTIMENTS = ["positive", "neutral", "negative"];
// the same colours as `avemo plot` (plot.py)
const EMOTION_COLOURS = {neutral: "#9e9e9e", joy: "#f4b400", sadness: "#4285f4", anger: "#db4437",
                         surprise: "#ab47bc", fear: "#00897b", disgust: "#6d4c41"};
const SENTIMENT_COLOURS = {positive: "#0f9d58", neutral: "#bdbdbd", negative: "#c62828"};
const SVG = "http://www.w3.org/2000/svg";

// A token given as ?token= travels on (the server also keeps it as a cookie for media and events).
const TOKEN = new URLSearchParams(location.search).get("token");
function api(path) {
  return TOKEN ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN) : path;
}
function page(path) { return api(path); }

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function legend(target) {
  target.replaceChildren(...EMOTIONS.map(e => {
    const item = el("span"); item.append(el("i", {style: `background:${EMOTION_COLOURS[e]}`}), e); return item;
  }), ...SENTIMENTS.map(s => {
    const item = el("span"); item.append(el("i", {style: `background:${SENTIMENT_COLOURS[s]}`}), s + " (sentiment)"); return item;
  }));
}

// The timeline: the seven emotion probabilities stacked over time (a step per segment) and a
// sentiment strip under them; `onSeek(t)` is called with the time clicked.
class Timeline {
  constructor(svg, onSeek) {
    this.svg = svg; this.segments = []; this.duration = 0; this.onSeek = onSeek;
    this.width = 1000; this.height = 170; this.strip = 22;
    svg.setAttribute("viewBox", `0 0 ${this.width} ${this.height + this.strip + 18}`);
    svg.addEventListener("click", ev => {
      const box = svg.getBoundingClientRect();
      const t = (ev.clientX - box.left) / box.width * this.span();
      if (this.onSeek) this.onSeek(Math.max(0, Math.min(t, this.span())));
    });
    this.layer = el("svg:g"); this.cursor = el("svg:line", {y1: 0, y2: this.height + this.strip, stroke: "#212121",
      "stroke-width": 2, "data-role": "cursor"});
    this.axis = el("svg:g");
    svg.append(this.layer, this.axis, this.cursor);
  }
  span() {
    const last = this.segments.reduce((m, s) => Math.max(m, s.end > s.start ? s.end : s.start + 1), 0);
    return Math.max(this.duration || 0, last, 1);
  }
  x(t) { return t / this.span() * this.width; }
  add(segment) { this.segments.push(segment); this.draw(); }
  setDuration(d) { this.duration = d; this.draw(); }
  draw() {
    const parts = [];
    for (const s of this.segments) {
      const a = this.x(s.start), b = this.x(s.end > s.start ? s.end : s.start + 1), w = Math.max(b - a, 1);
      let y = this.height;
      for (const e of EMOTIONS) {
        const h = (s.emotion_probs[e] || 0) * this.height;
        y -= h;
        parts.push(el("svg:rect", {x: a, y, width: w, height: h, fill: EMOTION_COLOURS[e], "data-emotion": e}));
      }
      const strength = s.sentiment_probs[s.sentiment] || 1;
      parts.push(el("svg:rect", {x: a, y: this.height + 2, width: w, height: this.strip - 4,
        fill: SENTIMENT_COLOURS[s.sentiment], "fill-opacity": 0.35 + 0.65 * strength, "data-role": "sentiment"}));
      const seg = el("svg:rect", {x: a, y: 0, width: w, height: this.height + this.strip, fill: "transparent",
        "data-role": "segment", "data-start": s.start, "data-end": s.end});
      seg.append(el("svg:title", {}, `${s.start.toFixed(2)}–${s.end.toFixed(2)} s: ${s.emotion}, ${s.sentiment}`));
      parts.push(seg);
    }
    this.layer.replaceChildren(...parts);
    const ticks = [], span = this.span(), step = niceStep(span / 8);
    for (let t = 0; t <= span + 1e-9; t += step) {
      ticks.push(el("svg:text", {x: Math.min(this.x(t) + 2, this.width - 30), y: this.height + this.strip + 14,
        "font-size": 11, fill: "#757575"}, formatTime(t)));
    }
    this.axis.replaceChildren(...ticks);
  }
  move(t) { const x = this.x(t); this.cursor.setAttribute("x1", x); this.cursor.setAttribute("x2", x); }
}

// One lane per person (`person` "P1", "P2", ...): a bar where that person speaks, in the colour of
// the emotion judged there, and at its start the person's face (cut from the media where their own
// face was judged); the lanes show only once someone is told apart (people on).
class Lanes {
  constructor(svg, onSeek) {
    this.svg = svg; this.segments = []; this.duration = 0; this.onSeek = onSeek;
    this.width = 1000; this.lane = 26;
    this.faces = {}; this.picked = {}; this.source = null; this.grabs = Promise.resolve();
    svg.addEventListener("click", ev => {
      const box = svg.getBoundingClientRect();
      const t = (ev.clientX - box.left) / box.width * this.span();
      if (this.onSeek) this.onSeek(Math.max(0, Math.min(t, this.span())));
    });
    this.layer = el("svg:g"); this.cursor = el("svg:line", {y1: 0, stroke: "#212121", "stroke-width": 2});
    svg.append(this.layer, this.cursor);
  }
  span() { return Math.max(this.duration || 0, ...this.segments.map(s => s.end), 1); }
  x(t) { return t / this.span() * this.width; }  // as the timeline above: the lanes line up with it
  add(segment) {
    if (!segment.person) return;
    this.segments.push(segment);
    this.draw();
    this.thumbnail(segment);
  }
  // The media to cut faces from: the file's URL and whether it is a still image.
  setSource(src, isImage) { this.source = {src, isImage}; this.segments.forEach(s => this.thumbnail(s)); }
  thumbnail(s) {  // the first segment showing the person's own face (else, until then, any face judged in their turn)
    const own = s.link != null;
    if (!this.source || !s.face_box || this.picked[s.person] === "own" || this.picked[s.person] === "any" && !own) return;
    this.picked[s.person] = own ? "own" : "any";
    const who = s.person, t = (s.start + s.end) / 2, box = s.face_box;
    this.grabs = this.grabs.then(() => grabFace(this.source, t, box)).then(url => { this.faces[who] = url; this.draw(); }, () => {});
  }
  setDuration(d) { this.duration = d; this.draw(); }
  people() { return [...new Set(this.segments.map(s => s.person))].sort((a, b) => a.slice(1) - b.slice(1)); }
  draw() {
    const people = this.people();
    this.svg.toggleAttribute("hidden", !people.length);  // an SVG element has no `hidden` property
    const height = people.length * this.lane;
    this.svg.setAttribute("viewBox", `0 0 ${this.width} ${Math.max(height, 1)}`);
    this.cursor.setAttribute("y2", height);
    const parts = [];
    for (const [i, who] of people.entries()) {
      const lane = el("svg:g", {"data-role": "lane", "data-person": who});
      for (const s of this.segments.filter(s => s.person === who)) {
        const bar = el("svg:rect", {x: this.x(s.start), y: i * this.lane + 3, width: Math.max(this.x(s.end) - this.x(s.start), 1),
          height: this.lane - 6, fill: EMOTION_COLOURS[s.emotion], "data-role": "turn", "data-start": s.start});
        bar.append(el("svg:title", {}, `${who} ${s.start.toFixed(2)}–${s.end.toFixed(2)} s: ${s.emotion}, ${s.sentiment}`));
        lane.append(bar);
      }
      const face = this.faces[who], left = face ? this.lane : 0;
      if (face) lane.append(el("svg:image", {href: face, x: 1, y: i * this.lane + 1, width: this.lane - 2,
        height: this.lane - 2, "data-role": "face"}));
      lane.append(el("svg:text", {x: left + 4, y: i * this.lane + 17, "font-size": 13, fill: "#212121", stroke: "#fff",
        "stroke-width": 3, "paint-order": "stroke"}, who));
      parts.push(lane);
    }
    this.layer.replaceChildren(...parts);
  }
  move(t) { const x = this.x(t); this.cursor.setAttribute("x1", x); this.cursor.setAttribute("x2", x); }
}

// A face cut from the media at `t` seconds (`box`: x, y, w, h in its pixels), a little wider than the
// box and square, as a PNG data URL: a video is read by a hidden player of its own, so that the one
// the user watches does not jump.
function grabFace(source, t, box) {
  return new Promise((resolve, reject) => {
    const draw = picture => {
      const [x, y, w, h] = box, side = Math.max(w, h) * 1.3, cx = x + w / 2, cy = y + h / 2;
      const canvas = el("canvas", {width: 64, height: 64});
      canvas.getContext("2d").drawImage(picture, cx - side / 2, cy - side / 2, side, side, 0, 0, 64, 64);
      resolve(canvas.toDataURL("image/png"));
    };
    if (source.isImage) {
      const img = el("img", {src: source.src});
      img.onload = () => draw(img); img.onerror = reject;
      return;
    }
    const video = el("video", {src: source.src, muted: "", preload: "auto"});
    video.addEventListener("loadeddata", () => { video.currentTime = t; }, {once: true});
    video.addEventListener("seeked", () => { draw(video); video.removeAttribute("src"); video.load(); }, {once: true});
    video.addEventListener("error", reject, {once: true});
  });
}

function niceStep(raw) {
  for (const s of [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) if (s >= raw) return s;
  return 7200;
}
function formatTime(t) {
  const m = Math.floor(t / 60), s = t - 60 * m;
  return m ? `${m}:${s.toFixed(0).padStart(2, "0")}` : `${s.toFixed(s < 10 && s % 1 ? 1 : 0)} s`;
}

function segmentAt(segments, t) {
  return segments.find(s => t >= s.start && t < (s.end > s.start ? s.end : s.start + 1)) || null;
}

// The judged face's box over a player or picture: its `face_box` is in the media's own pixels.
function placeBox(box, media, faceBox, naturalWidth, naturalHeight) {
  if (!faceBox || !naturalWidth) { box.style.display = "none"; return; }
  const sx = media.clientWidth / naturalWidth, sy = media.clientHeight / naturalHeight;
  const [x, y, w, h] = faceBox;
  Object.assign(box.style, {display: "block", left: `${x * sx}px`, top: `${y * sy}px`, width: `${w * sx}px`,
                            height: `${h * sy}px`});
}

function showNow(target, segment) {
  if (!segment) { target.innerHTML = "<span class='muted'>no segment here</span>"; return; }
  target.replaceChildren(
    labelled("emotion", `${segment.emotion} ${(segment.emotion_probs[segment.emotion] * 100).toFixed(0)}%`),
    labelled("sentiment", `${segment.sentiment} ${(segment.sentiment_probs[segment.sentiment] * 100).toFixed(0)}%`),
    labelled("judged by", segment.modalities.join(" + ") || "–"), ...(segment.person ? [labelled("person", segment.person)] : []));
}
function labelled(name, value) {
  const span = el("span"); span.append(name + ": ", el("b", {"data-role": name.replace(" ", "-")}, value)); return span;
}

function segmentRow(s, onClick) {
  const row = el("tr");
  for (const v of [s.start.toFixed(2), s.end.toFixed(2), s.person || "–", `${s.emotion} (${s.emotion_probs[s.emotion].toFixed(2)})`,
                   `${s.sentiment} (${s.sentiment_probs[s.sentiment].toFixed(2)})`, s.modalities.join("+"), s.faces,
                   s.face_box ? s.face_box.join(", ") : "–"]) row.append(el("td", {}, String(v)));
  if (onClick) row.addEventListener("click", () => onClick(s.start));
  return row;
}
