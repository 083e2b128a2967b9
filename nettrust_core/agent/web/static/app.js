"use strict";
// NetTrust dashboard: each page reads JSON from /api/… (read-only over the statistics database).
const page = document.body.dataset.page;
const app = document.getElementById("app");

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
async function get(path) {
  const r = await fetch(path, {credentials: "same-origin"});
  if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("login"); }
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
const when = ts => ts ? new Date(ts * 1000).toLocaleString() : "–";
const time = ts => ts ? new Date(ts * 1000).toLocaleTimeString() : "–";
function left(s) {
  if (s >= 3600) return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m";
  if (s >= 60) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  return Math.max(0, Math.floor(s)) + "s";
}
function verdict(v) {
  const cls = {granted: "v-granted", allowed: "v-allowed", blocked: "v-blocked", refused: "v-refused",
               "would refuse": "v-would-refuse"}[v] || "v-other";
  return el("span", {class: "verdict " + cls, text: v || "–"});
}
// columns: [heading, key or function(row), css class]
function table(id, columns, rows, empty = "Nothing recorded yet.") {
  const t = el("table", {id});
  t.append(el("thead", {}, el("tr", {}, ...columns.map(([h, , c]) => el("th", {class: c || "", text: h})))));
  const body = el("tbody");
  t.append(body);
  addRows(body, columns, rows);
  if (!rows.length) body.append(el("tr", {class: "empty"}, el("td", {colspan: columns.length, class: "muted", text: empty})));
  return t;
}
function row(columns, r) {
  return el("tr", {"data-id": r.id ?? ""}, ...columns.map(([, k, c]) => {
    const v = typeof k === "function" ? k(r) : r[k];
    const td = el("td", {class: c || ""});
    td.append(v instanceof Node ? v : (v === null || v === undefined ? "–" : String(v)));
    return td;
  }));
}
function addRows(body, columns, rows, atTop = false) {
  for (const r of (atTop ? [...rows].reverse() : rows)) {
    const tr = row(columns, r);
    if (atTop) { tr.classList.add("new"); body.prepend(tr); } else body.append(tr);
  }
}
function card(title, ...children) { return el("section", {class: "card"}, el("h2", {text: title}), ...children); }

// -- pages -------------------------------------------------------------------------------------
const pages = {
  async overview() {
    // the plot spans the last 6 hours, or less when the records start later
    const [s, top, tl] = await Promise.all([get("/api/summary?since=24h"), get("/api/top?since=24h"),
                                           get("/api/timeline?since=6h")]);
    const span = Date.now() / 1000 - tl.t[0];
    const stat = (n, l) => el("div", {class: "card stat"}, el("div", {class: "n", text: String(n)}), el("div", {class: "l", text: l}));
    const blocked = s.by_outcome.blocked || 0;
    app.replaceChildren(
      el("h1", {text: "Last 24 hours"}),
      el("div", {class: "stats", id: "totals"}, stat(s.queries, "queries"), stat(blocked, "blocked"),
         stat(s.grants, "grants"), stat(s.active_addresses, "addresses open now"), stat(s.clients, "clients"),
         stat(s.events.unauthorized || 0, "refused attempts")),
      card("Queries, blocks, grants and refused attempts" + (span < 6 * 3600 - 600 ? " (since the first record)" : " (last 6 hours)"), el("div", {id: "plot", class: "plot"})),
      el("div", {class: "grid", style: "margin-top:16px"},
        card("Top allowed names", table("top-allowed", [["Name", "domain", "mono"], ["Queries", "queries", "num"], ["Cached", "cached", "num"]], top.allowed)),
        card("Top blocked names", table("top-blocked", [["Name", "domain", "mono"], ["Queries", "queries", "num"], ["Clients", "clients", "num"], ["Reason", "reason"]], top.blocked)),
        card("Top clients", table("top-clients", [["Client", "client", "mono"], ["Queries", "queries", "num"], ["Blocked", "blocked", "num"], ["Names", "domains", "num"]], top.clients))));
    plot(document.getElementById("plot"), tl);
  },

  async log() {
    const columns = [["Time", r => time(r.ts)], ["Name", "name", "mono"], ["Client", "client", "mono"],
                     ["Verdict", r => verdict(r.verdict)], ["Reason", r => r.reason + (r.rule ? " (" + r.rule + ")" : "")],
                     ["Source", "source"], ["Grants", r => r.grants.join(", "), "mono"]];
    const rows = await get("/api/log?limit=200");
    const t = table("log", columns, rows, "No queries recorded yet.");
    const status = el("span", {class: "muted", id: "follow", text: "following new queries"});
    app.replaceChildren(el("h1", {text: "Query log"}), el("div", {class: "toolbar"}, status), el("section", {class: "card"}, t));
    let last = rows.length ? rows[0].id : 0;
    const body = t.tBodies[0];
    setInterval(async () => {
      try {
        const fresh = await get("/api/log?after=" + last + "&limit=200");
        if (fresh.length) {
          body.querySelector("tr.empty")?.remove();
          last = fresh[0].id;
          addRows(body, columns, fresh, true);
          while (body.rows.length > 1000) body.deleteRow(-1);
        }
        status.textContent = "following new queries · updated " + new Date().toLocaleTimeString();
      } catch (e) { status.textContent = "update failed: " + e.message; }
    }, 2000);
  },

  async hosts() {
    const rows = await get("/api/granted");
    const columns = [["Address", r => el("a", {href: "/why?address=" + encodeURIComponent(r.address), text: r.address}), "mono"],
                     ["Names", r => r.names.join(", "), "mono"], ["Clients", r => r.clients.join(", "), "mono"],
                     ["Time left", r => el("span", {"data-expires": r.expires, text: left(r.left)}), "num"], ["Until", r => when(r.expires)]];
    app.replaceChildren(el("h1", {text: "Granted hosts"}),
      el("p", {class: "muted", text: "Addresses a DNS answer opened whose grant has not ended yet (as recorded by the agent)."}),
      el("section", {class: "card"}, table("granted", columns, rows, "No address is granted now.")));
    setInterval(() => document.querySelectorAll("[data-expires]").forEach(s => { s.textContent = left(s.dataset.expires - Date.now() / 1000); }), 1000);
  },

  async refused() {
    const rows = await get("/api/refused?since=7d");
    const columns = [["Time", r => when(r.ts)], ["Verdict", r => verdict(r.verdict)], ["Destination", r => el("a", {href: "/why?address=" + encodeURIComponent(r.destination), text: r.destination}), "mono"],
                     ["Port", r => (r.protocol || "") + "/" + (r.port ?? "–"), "mono"], ["Source", "source", "mono"], ["User", r => r.user || (r.uid ?? "–")], ["Hook", "hook"]];
    app.replaceChildren(el("h1", {text: "Refused connection attempts"}),
      el("p", {class: "muted", text: "Packets to addresses no answer granted (logged at most lifecycle.log_rate per second). In audit mode they went through: \"would refuse\"."}),
      el("section", {class: "card"}, table("refused", columns, rows, "No refused attempts in the last 7 days.")));
  },

  async why() {
    const address = new URLSearchParams(location.search).get("address") || "";
    const form = el("form", {class: "toolbar", method: "get", action: "/why"},
      el("input", {type: "text", name: "address", placeholder: "IP address", value: address, size: "40"}), el("button", {type: "submit", text: "Why?"}));
    app.replaceChildren(el("h1", {text: "Why is this address open?"}), form);
    if (!address) return;
    let w;
    try { w = await get("/api/why?address=" + encodeURIComponent(address)); }
    catch (e) { app.append(el("p", {class: "error", text: e.message})); return; }
    const n = (w.refused || []).length, attempts = n + " refused connection attempt" + (n === 1 ? "" : "s");
    const state = !w.grants.length ? (w.answers.length ? "never granted" : "never granted, never answered") + "; " + attempts + " (in the last 30 days)"
      : (w.open ? "open until " + when(w.expires) : "closed (last grant ended " + when(w.expires) + ")") + (n ? "; " + attempts : "");
    app.append(el("p", {id: "why-state"}, el("strong", {class: "mono", text: w.address}), ": " + state),
      el("div", {class: "grid"},
        card("Grants", table("why-grants", [["Granted", r => when(r.granted)], ["Until", r => when(r.expires)], ["Name", "name", "mono"], ["Chain", "chain", "mono"], ["Client", "client", "mono"], ["Rule", "rule"]], w.grants, "none")),
        card("Answers naming it", table("why-answers", [["Name", "name", "mono"], ["Times", "times", "num"], ["Cached", "cached", "num"], ["Clients", "clients", "mono"], ["Last", r => when(r.last)]], w.answers, "none")),
        card("Refused connection attempts", table("why-refused", [["Time", r => when(r.attempted)], ["Verdict", r => verdict(r.verdict)], ["Source", "source", "mono"], ["User", r => r.user || (r.uid ?? "–")],
                                                                 ["Port", r => (r.protocol || "") + "/" + (r.port ?? "–"), "mono"], ["Hook", "hook"]], w.refused || [], "none"))));
  },

  async learn() {
    const p = await get("/api/learn?since=7d");
    app.replaceChildren(el("h1", {text: "Learned policy proposal"}),
      el("p", {class: "muted", text: `From the ${p.names_used} names whose answers were granted in the last 7 days (nettrust learn --since 7d). Review before adding to nettrust.toml.`}),
      el("div", {class: "grid"},
        card("Proposed allow patterns", table("learn-allow", [["Pattern", "pattern", "mono"], ["Names", "name_count", "num"], ["Grants", "grants", "num"], ["Examples", r => r.names.slice(0, 3).join(", "), "mono"]], p.allow, "Nothing granted in this period.")),
        card("Bare-address connections (not proposed)", table("learn-bare", [["Address", "address", "mono"], ["Attempts", "attempts", "num"], ["Ports", r => r.ports.join(", "), "mono"], ["Users", r => r.users.join(", ")]], p.bare_addresses, "None."))),
      card("TOML snippet", el("pre", {class: "toml", id: "learn-toml", text: p.toml})));
  },
};

function plot(target, tl) {
  const opts = {
    width: Math.max(400, target.clientWidth - 8), height: 240,
    series: [{}, {label: "queries", stroke: "#0969da", width: 2}, {label: "blocked", stroke: "#cf222e", width: 2},
             {label: "grants", stroke: "#1a7f37", width: 2}, {label: "refused", stroke: "#9a6700", width: 2, dash: [6, 4]}],
    axes: [{}, {label: "per " + Math.round(tl.t.length > 1 ? tl.t[1] - tl.t[0] : 60) + " s"}],
  };
  target.replaceChildren();
  new uPlot(opts, [tl.t, tl.queries, tl.blocked, tl.grants, tl.refused], target);
}

document.querySelector(`[data-nav="${page}"]`)?.classList.add("active");
pages[page]().catch(e => { if (e.message !== "login") app.replaceChildren(el("p", {class: "error", id: "error", text: e.message})); });
