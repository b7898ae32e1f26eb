// The placement map at /: polls /status.json and draws each vCPU on the CPUs it ran on
// since the daemon's previous reading (one tick), or, idle, on the CPU it is pinned to.
// Vanilla JS, no dependency, embedded in the binary.
"use strict";

const POLL_MS = 2000;
const GLYPH = { local: "\u25cf", same_socket: "\u25c6", remote: "\u25b2", none: "?" };
const WORD = { local: "local", same_socket: "same socket", remote: "remote", none: "unknown" };
// A vCPU is drawn on a CPU where it spent at least this share of its latest tick's run time.
const MIN_SHARE = 0.1;
// An idle vCPU is drawn on its allowed CPUs only when it is pinned to this few.
const MAX_PINNED = 4;

let selected = decodeURIComponent(location.hash.slice(1)) || null;
let last = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e[k] = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// "0-3,8" -> [0,1,2,3,8]
function cpuList(s) {
  const out = [];
  for (const part of (s || "").split(",")) {
    if (!part) continue;
    const [a, b] = part.split("-").map(Number);
    for (let i = a; i <= (b === undefined ? a : b); i++) out.push(i);
  }
  return out;
}

// The same rule as Topology::locality: the GPU's node, another node of its socket, or not.
function locality(cpu, vm, where) {
  const w = where.get(cpu);
  if (!w || !vm.gpu_nodes.some((n) => where.nodes.has(n))) return "none";
  if (vm.gpu_nodes.includes(w.node)) return "local";
  if (vm.gpu_nodes.some((n) => where.nodes.get(n) === w.socket)) return "same_socket";
  return "remote";
}

// The same rule as view::node_locality, for memory on `node`.
function memoryLocality(node, vm, where) {
  if (!where.nodes.has(node) || !vm.gpu_nodes.some((n) => where.nodes.has(n))) return "none";
  if (vm.gpu_nodes.includes(node)) return "local";
  if (vm.gpu_nodes.some((n) => where.nodes.get(n) === where.nodes.get(node))) return "same_socket";
  return "remote";
}

function mib(bytes) { return (bytes / 1048576).toFixed(0) + " MiB"; }

// A node's memory line: the selected VM's bytes there as a bar (share of the VM's memory),
// or, with nothing selected, how much VM memory the node holds.
function memoryHere(view, sel, node, where) {
  const bytes = (vm) => (vm.memory && vm.memory.by_node && vm.memory.by_node[node]) || 0;
  if (sel) {
    const all = Object.values((sel.memory && sel.memory.by_node) || {}).reduce((a, b) => a + b, 0);
    if (!sel.memory) return el("div", { class: "mem" }, "memory of " + sel.domain + ": not read");
    const here = bytes(sel);
    const loc = memoryLocality(node, sel, where);
    const share = all ? here / all : 0;
    return el("div", { class: "mem " + loc, "data-memory-node": node, "data-locality": loc,
      title: sel.domain + ": " + mib(here) + " on node " + node + " (" + WORD[loc] + ")" },
      el("span", { class: "bar", style: "width:" + (100 * share).toFixed(0) + "%" }),
      el("span", { class: "label" }, GLYPH[loc] + " " + mib(here) + " (" + pct(share) + " of its memory)"));
  }
  const vms = view.vms.filter((vm) => bytes(vm) > 0);
  const total = vms.reduce((a, vm) => a + bytes(vm), 0);
  return el("div", { class: "mem", "data-memory-node": node },
    vms.length ? "VM memory here: " + mib(total) + " of " + vms.length + " VM(s)" : "no VM memory here");
}

function pct(x) { return x == null ? "n/a" : (100 * x).toFixed(1) + "%"; }

// Where each vCPU is drawn: [{cpu, share, idle}].
function places(v) {
  const ran = Object.entries(v.recent_cpus || {}).map(([c, s]) => [Number(c), s]);
  const total = ran.reduce((a, [, s]) => a + s, 0);
  if (total > 0) {
    return ran.filter(([, s]) => s / total >= MIN_SHARE).map(([cpu, s]) => ({ cpu, share: s / total, idle: false }));
  }
  const allowed = cpuList(v.allowed_cpus);
  return allowed.length <= MAX_PINNED ? allowed.map((cpu) => ({ cpu, share: 0, idle: true })) : [];
}

function select(domain) {
  selected = selected === domain ? null : domain;
  history.replaceState(null, "", selected ? "#" + encodeURIComponent(selected) : location.pathname);
  if (last) render(last);
}

function drawMap(view, where) {
  const t = view.topology;
  const reserved = new Set(cpuList(t.reserved_cpus));
  const sel = view.vms.find((vm) => vm.domain === selected);
  const cells = new Map();
  const node = (n) => {
    const gpus = el("div", { class: "gpus" }, ...n.gpus.map((g) =>
      el("span", { class: "gpu" + (sel && sel.gpus.some((x) => x.address === g) ? " sel" : ""), "data-gpu": g }, g)));
    const cores = el("div", { class: "cores" }, ...n.cores.map((core) => el("div", { class: "core" }, ...core.map((id) => {
      const cell = el("div", { class: "cpu" + (reserved.has(id) ? " reserved" : ""), "data-cpu": id, id: "cpu-" + id,
        title: "CPU " + id + (reserved.has(id) ? " (reserved)" : "") }, el("span", { class: "id" }, String(id)));
      cells.set(id, cell);
      return cell;
    }))));
    const isSel = sel && sel.gpu_nodes.includes(n.id);
    return el("div", { class: "node" + (isSel ? " sel" : ""), "data-node": n.id }, el("h3", {}, "node " + n.id + (n.cores.length ? "" : " (memory only)")), gpus, cores,
      memoryHere(view, sel, n.id, where));
  };
  const map = el("div", { id: "map" },
    ...t.sockets.map((s) => el("div", { class: "socket", "data-socket": s.id }, el("h2", {}, "socket " + s.id), ...s.nodes.map(node))));
  if (t.other_nodes.length) map.append(el("div", { class: "socket" }, el("h2", {}, "nodes without a socket"), ...t.other_nodes.map(node)));
  const offline = cpuList(t.offline_cpus);
  if (offline.length) {
    map.append(el("div", { class: "socket" }, el("h2", {}, "offline CPUs"), el("div", { class: "cores" },
      ...offline.map((id) => el("div", { class: "cpu offline", "data-cpu": id }, el("span", { class: "id" }, String(id)))))));
  }
  view.vms.forEach((vm, i) => {
    for (const v of vm.vcpus) {
      for (const p of places(v)) {
        const cell = cells.get(p.cpu);
        if (!cell) continue;
        const loc = locality(p.cpu, vm, where);
        const cls = ["vcpu", loc];
        if (p.idle) cls.push("pinned-idle");
        if (sel) cls.push(vm === sel ? "sel" : "dim");
        const how = p.idle ? "idle, pinned here" : "ran " + pct(p.share) + " of its latest tick here";
        cell.append(el("span", { class: cls.join(" "), "data-domain": vm.domain, "data-vcpu": v.vcpu, "data-locality": loc,
          title: vm.domain + " vCPU " + v.vcpu + " on CPU " + p.cpu + ": " + WORD[loc] + " (" + how + ")",
          onclick: () => select(vm.domain) }, GLYPH[loc]));
      }
    }
  });
  return map;
}

function drawPanel(view) {
  const vm = view.vms.find((x) => x.domain === selected);
  if (!vm) return el("div", { id: "panel" }, "Select a VM (a marker or a row) to see its threads, GPU and node highlighted.");
  const rows = vm.vcpus.map((v) => el("tr", { "data-vcpu": v.vcpu },
    el("td", {}, String(v.vcpu)), el("td", {}, v.allowed_cpus || "none"),
    el("td", {}, Object.keys(v.recent_cpus || {}).join(",") || (v.measured ? "did not run" : "not measured")),
    el("td", {}, pct(v.remote_ratio)), el("td", {}, v.repin_recommended ? "yes" : "no")));
  return el("div", { id: "panel", "data-domain": vm.domain },
    el("b", {}, vm.domain), " \u00b7 remote ratio ", el("span", { class: "ratio" }, pct(vm.remote_ratio)),
    " \u00b7 GPUs ", (vm.gpus.map((g) => g.address + "@node" + (g.node ?? "?")).join(", ") || "none"),
    el("div", { class: "verdict" }, "policy: ", vm.policy ? vm.policy.verdict + " \u2014 " + vm.policy.reason : "not evaluated"),
    el("div", { class: "action" }, "last action: ", vm.last_action || "none"),
    el("div", { class: "memory" }, "memory: ", vm.memory
      ? Object.entries(vm.memory.by_node).map(([n, b]) => "node " + n + " " + mib(b)).join(", ") +
        " (remote " + pct(vm.memory.remote_ratio) + ")"
      : "not read"),
    el("div", {}, "emulator and I/O threads: not measured yet"),
    el("table", {}, el("tr", {}, ...["vCPU", "pinned to", "ran on (latest tick)", "remote (window)", "repin?"].map((h) => el("th", {}, h))), ...rows));
}

function drawList(view) {
  const rows = view.vms.map((vm) => el("tr", { class: vm.domain === selected ? "sel" : "", "data-domain": vm.domain, onclick: () => select(vm.domain) },
    el("td", {}, vm.domain), el("td", {}, vm.gpus.map((g) => g.address + "@node" + (g.node ?? "?")).join(", ") || "none"),
    el("td", {}, String(vm.vcpus.length)), el("td", {}, vm.remote_ratio == null ? "n/a (no GPU)" : pct(vm.remote_ratio))));
  return el("table", { id: "vms" }, el("tr", {}, ...["VM", "GPUs (node)", "vCPUs", "remote ratio (recent)"].map((h) => el("th", {}, h))), ...rows);
}

function render(view) {
  const where = new Map();
  where.nodes = new Map();
  for (const s of view.topology.sockets) for (const n of s.nodes) {
    where.nodes.set(n.id, s.id);
    for (const core of n.cores) for (const c of core) where.set(c, { node: n.id, socket: s.id });
  }
  for (const n of view.topology.other_nodes) {
    where.nodes.set(n.id, null);
    for (const core of n.cores) for (const c of core) where.set(c, { node: n.id, socket: null });
  }
  const t0 = performance.now();
  document.getElementById("map").replaceWith(drawMap(view, where));
  document.getElementById("panel").replaceWith(drawPanel(view));
  document.getElementById("vms").replaceWith(drawList(view));
  const withGpu = view.vms.filter((vm) => vm.remote_ratio != null).length;
  const misplaced = view.vms.filter((vm) => vm.remote_ratio > 0.5).length;
  document.getElementById("summary").textContent = view.vms.length + " running VM(s), " + withGpu +
    " with GPUs, " + misplaced + " of them with more than half of their recent vCPU time on the wrong socket.";
  const status = document.getElementById("status");
  status.className = "";
  status.dataset.tick = view.tick;
  const ms = performance.now() - t0;
  status.textContent = "live: tick " + view.tick + ", " + view.vms.length + " VM(s), drawn in " + ms.toFixed(0) + " ms";
  // For the browser test's figures (BENCHMARKS.md): draws so far and the first one's mark.
  if (!window.pinsightDraws) performance.mark("pinsight-first-draw");
  window.pinsightDraws = (window.pinsightDraws || 0) + 1;
}

async function poll() {
  try {
    const r = await fetch("/status.json", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    last = await r.json();
    render(last);
  } catch (e) {
    const status = document.getElementById("status");
    status.className = "stale";
    status.textContent = "not updating: " + e.message;
  }
  setTimeout(poll, POLL_MS);
}

poll();
