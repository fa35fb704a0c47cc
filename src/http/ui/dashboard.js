// floe's replication dashboard: reads the management API with the operator's token and renders it.
// Every value is set as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "floe-admin-token";
const REFRESH_MS = 2000;

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(method, path, body) {
  const headers = { "accept": "application/json" };
  if (token()) headers["authorization"] = "Bearer " + token();
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const value = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const message = value && value.error ? value.error.message : response.statusText;
    throw new Error(`${method} ${path}: ${response.status} ${message}`);
  }
  return value;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

// The state an operator needs to see: a stream that keeps failing attempts is retrying.
function shownState(destination) {
  const moving = destination.state === "replicating" || destination.state === "backfilling";
  return moving && destination.attempts > 0 ? "retrying" : destination.state;
}

function tablePath(table) {
  const namespace = encodeURIComponent(table.namespace.join("\u001f"));
  return `/management/v1/tables/${encodeURIComponent(table.warehouse)}/${namespace}/` +
    `${encodeURIComponent(table.table)}/replication`;
}

function actionButton(label, table, destination) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.dataset.action = label.toLowerCase();
  button.addEventListener("click", async () => {
    try {
      await api("POST", `${tablePath(table)}/${label.toLowerCase()}`,
        { peer: destination.peer, warehouse: destination.warehouse });
      await refresh();
    } catch (err) {
      document.getElementById("problem").textContent = err.message;
    }
  });
  return button;
}

function renderPeers(peers) {
  const body = document.querySelector("#peers tbody");
  body.replaceChildren();
  for (const peer of peers) {
    const row = document.createElement("tr");
    row.dataset.peer = peer.region;
    cell(row, peer.region);
    cell(row, peer["base-url"]);
    cell(row, peer["has-credential"] ? "stored" : "none");
    cell(row, peer.warehouses.map((w) => `${w.warehouse} → ${w["storage-root"]}`).join(", "));
    body.appendChild(row);
  }
}

function renderStreams(tables) {
  const body = document.querySelector("#streams tbody");
  body.replaceChildren();
  for (const table of tables) {
    // A namespace's own stream carries its properties; it has no table name.
    const isNamespace = table.kind === "namespace";
    const source = [table.warehouse, ...table.namespace, ...(isNamespace ? [] : [table.table])]
      .join(".");
    for (const destination of table.destinations) {
      const state = shownState(destination);
      const row = document.createElement("tr");
      row.dataset.table = source;
      row.dataset.kind = table.kind;
      row.dataset.peer = destination.peer;
      row.dataset.state = state;
      cell(row, isNamespace ? `${source} (namespace properties)` : source);
      const replica = [destination.warehouse, ...destination.namespace];
      if (!isNamespace) replica.push(destination.table);
      row.dataset.mode = destination.mode;
      // A synchronous destination: what it made of the commits that waited for it.
      const sync = destination.sync
        ? ` (sync: ${destination.sync.confirmed} confirmed, ${destination.sync.missed} missed)`
        : "";
      cell(row, `${destination.peer}: ${replica.join(".")}${sync}`);
      const stateCell = cell(row, "");
      const badge = document.createElement("span");
      badge.className = `state state-${state}`;
      badge.textContent = state;
      stateCell.appendChild(badge);
      cell(row, destination["lag-versions"]);
      cell(row, destination["lag-seconds"].toFixed(1));
      cell(row, destination["last-replicated-at"] || "never");
      cell(row, destination.failure, "failure");
      const actions = cell(row, "");
      // The management API acts on the streams of tables and views.
      for (const label of isNamespace ? [] : ["Pause", "Resume", "Resync"]) {
        actions.appendChild(actionButton(label, table, destination));
      }
      body.appendChild(row);
    }
  }
  if (!body.children.length) {
    const row = document.createElement("tr");
    cell(row, "Nothing is replicated from this region yet.", "muted").colSpan = 8;
    body.appendChild(row);
  }
}

async function renderOperations() {
  const document_ = await api("GET", "/management/v1/openapi.json");
  const body = document.querySelector("#operations tbody");
  body.replaceChildren();
  for (const [path, operations] of Object.entries(document_.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const row = document.createElement("tr");
      cell(row, method.toUpperCase());
      cell(row, path).style.fontFamily = "monospace";
      cell(row, (operation.summary || "").split("\n").join(" "));
      body.appendChild(row);
    }
  }
}

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const overview = await api("GET", "/management/v1/replication");
    document.getElementById("region").textContent = overview.region;
    renderPeers(overview.peers);
    renderStreams(overview.tables);
    document.getElementById("problem").textContent = "";
    document.getElementById("refreshed").textContent = new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("problem").textContent = err.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("token").value = "";
  refresh();
  renderOperations().catch((err) => {
    document.getElementById("problem").textContent = err.message;
  });
});

refresh();
renderOperations().catch((err) => {
  document.getElementById("problem").textContent = err.message;
});
