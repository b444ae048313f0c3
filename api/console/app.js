// The console: sign-in, the environments list, an environment, a run. Pages are
// paths (`/`, `/environments/APP/ENV`, `/runs/ID`) the server answers with this
// same page; everything shown comes from the public GraphQL API.

import { Api, ApiError } from "./graphql.js";
import { LogView } from "./logview.js";

const TOKEN_KEY = "shiplog.token";
const main = document.querySelector("main");
const who = document.querySelector("#who");
let api = null;
let viewer = null;
let leave = () => {};
// Counts the pages shown: an answer that arrives for a page already left is dropped.
let generation = 0;

const h = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const badge = (value, prefix = "") => (value ? `<span class="badge ${h(prefix)}${h(String(value).toLowerCase())}">${h(String(value).toLowerCase().replace(/_/g, " "))}</span>` : "");
const time = (t) => (t ? `<time datetime="${h(t)}" title="${h(t)}">${h(new Date(t).toLocaleString())}</time>` : "—");
const duration = (ms) => {
  if (ms === null || ms === undefined) return "—";
  const s = Number(ms) / 1000;
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
};
const short = (commit) => (commit ? `<code title="${h(commit)}">${h(commit.slice(0, 10))}</code>` : "—");
const envPath = (app, env) => `/environments/${encodeURIComponent(app)}/${encodeURIComponent(env)}`;
const runPath = (id) => `/runs/${encodeURIComponent(id)}`;

/** Why this token may not change `environment`, or null when it may. */
function denied(kind) {
  if (!viewer) return "sign in first";
  if (viewer.role === "ADMIN") return null;
  if (viewer.role !== "DEPLOYER") return `your role (${viewer.role.toLowerCase()}) may not deploy, set up, tear down, retry or cancel`;
  if (kind === "PRODUCTION" && !viewer.production) return "this token may not change production environments";
  return null;
}

function actionButton(id, label, reason, extra = "") {
  return `<button type="button" id="${id}" ${extra} ${reason ? `disabled title="${h(reason)}"` : ""}>${h(label)}</button>`;
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut(error.message);
    return;
  }
  main.innerHTML = `<section class="error-page" role="alert"><h1>Something went wrong</h1><p id="page-error">${h(error.message)}</p></section>`;
}

// --- Sign-in -------------------------------------------------------------------

function signInPage(message = "") {
  who.innerHTML = "";
  main.innerHTML = `
    <section class="sign-in">
      <h1>Sign in to shiplog</h1>
      <form id="sign-in">
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" required>
        <p class="field-error" id="token-error" role="alert">${h(message)}</p>
        <button type="submit">Sign in</button>
        <p class="muted">The token is kept for this browser tab's session only.</p>
      </form>
    </section>`;
  main.querySelector("#sign-in").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = main.querySelector("#token").value.trim();
    const candidate = new Api(token);
    try {
      const data = await candidate.request("{ viewer { name role production } }");
      sessionStorage.setItem(TOKEN_KEY, token);
      api = candidate;
      viewer = data.viewer;
      route();
    } catch (error) {
      main.querySelector("#token-error").textContent = error.message;
    }
  });
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  api?.close();
  api = null;
  viewer = null;
  signInPage(message);
}

function header() {
  const production = viewer.production && viewer.role !== "ADMIN" ? " · production" : "";
  who.innerHTML = `<span id="viewer-name">${h(viewer.name)}</span>
    <span class="badge role" id="viewer-role">${h(viewer.role.toLowerCase())}${production}</span>
    <span id="connection" class="muted"></span>
    <button type="button" id="sign-out">Sign out</button>`;
  who.querySelector("#sign-out").addEventListener("click", () => signOut());
  api.onConnection = (up, reason) => {
    const c = who.querySelector("#connection");
    if (c) c.textContent = up ? "" : `live updates reconnecting${reason ? ` (${reason})` : ""}…`;
  };
}

// --- Environments ---------------------------------------------------------------

// A page of the list holds at most what the API's connections give at once.
const PAGE = 100;
// How many of a list's environments are followed live, and how often the list is read again.
const FOLLOWED = 10;
const POLL_MS = 3000;

const LIST = `query($filter: EnvironmentFilter, $first: Int, $after: String, $last: Int, $before: String) {
  applications(first: 100) { nodes { name } }
  environments(filter: $filter, first: $first, after: $after, last: $last, before: $before) { totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } nodes {
    id name kind status health syncStatus commit expiresAt trackingBranch trackingTag
    application { name } drift { verdict }
    lastRun { id kind status queuedAt finishedAt }
  } }
}`;

async function listPage() {
  const params = new URLSearchParams(location.search);
  const filter = {};
  for (const key of ["application", "kind", "status", "drift"]) if (params.get(key)) filter[key] = params.get(key);
  // `?after=CURSOR` is the page after that environment, `?before=CURSOR` the one before it.
  const slice = params.get("before") ? { last: PAGE, before: params.get("before") } : { first: PAGE, after: params.get("after") };
  main.innerHTML = `<h1>Environments</h1><form id="filters" class="filters"></form><div id="environments" aria-busy="true"></div>`;
  // The environments with a run in progress are followed (each change shows at
  // once), at most FOLLOWED of them; everything else is read again every few
  // seconds. One subscription per listed environment would be a hundred
  // followers on the server for one open page.
  const followed = new Map();
  let refresh = null;
  const gen = generation;
  const load = async () => {
    const data = await api.request(LIST, { filter, ...slice });
    if (gen !== generation) return;
    drawFilters(data.applications.nodes, filter);
    drawEnvironments(data.environments, filter);
    const active = data.environments.nodes
      .filter((e) => e.lastRun && ["QUEUED", "RUNNING"].includes(e.lastRun.status))
      .slice(0, FOLLOWED)
      .map((e) => e.id);
    for (const [id, stop] of followed) {
      if (!active.includes(id)) {
        stop();
        followed.delete(id);
      }
    }
    for (const id of active) {
      if (followed.has(id)) continue;
      const stop = api.subscribe("subscription($id: ID!) { environmentEvents(environmentId: $id) { cursor } }", () => ({ id }), {
        next: () => {
          clearTimeout(refresh);
          refresh = setTimeout(() => load().catch(fail), 400);
        },
      });
      followed.set(id, stop);
    }
  };
  const poll = setInterval(() => load().catch(() => {}), POLL_MS);
  leave = () => {
    clearInterval(poll);
    clearTimeout(refresh);
    followed.forEach((stop) => stop());
  };
  await load();
}

function drawFilters(applications, filter) {
  const form = main.querySelector("#filters");
  const select = (name, options) =>
    `<label>${name} <select name="${name}"><option value="">any</option>${options
      .map((o) => `<option value="${h(o)}" ${filter[name] === o ? "selected" : ""}>${h(o.toLowerCase() === o ? o : o.toLowerCase().replace(/_/g, " "))}</option>`)
      .join("")}</select></label>`;
  form.innerHTML =
    select("application", applications.map((a) => a.name)) +
    select("kind", ["PREVIEW", "STAGING", "PRODUCTION"]) +
    select("status", ["PENDING", "READY", "FAILED", "TORN_DOWN"]) +
    select("drift", ["IN_SYNC", "DRIFTED", "UNKNOWN"]);
  form.onchange = () => {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    navigate(`/${params.size ? `?${params}` : ""}`);
  };
}

/** Links to the pages before and after this one, keeping the filters. */
function pager(connection, filter) {
  const { hasPreviousPage, hasNextPage, startCursor, endCursor } = connection.pageInfo;
  if (!hasPreviousPage && !hasNextPage) return "";
  const to = (key, cursor) => `/?${new URLSearchParams({ ...filter, [key]: cursor })}`;
  return `<nav class="pager" aria-label="pages">
    ${hasPreviousPage ? `<a id="page-previous" href="${h(to("before", startCursor))}">← previous ${PAGE}</a>` : ""}
    ${hasNextPage ? `<a id="page-next" href="${h(to("after", endCursor))}">next ${PAGE} →</a>` : ""}</nav>`;
}

function drawEnvironments(connection, filter) {
  const box = main.querySelector("#environments");
  box.removeAttribute("aria-busy");
  if (!connection.nodes.length) {
    box.innerHTML = `<p class="empty">No environments${main.querySelector("select option:checked[value]:not([value=''])") ? " match these filters" : " yet"}.</p>`;
    return;
  }
  box.innerHTML = `<table class="environments"><thead><tr>
      <th>Environment</th><th>Status</th><th>Health</th><th>Sync</th><th>Drift</th><th>Commit</th><th>Expires</th><th>Last run</th>
    </tr></thead><tbody>${connection.nodes
      .map(
        (e) => `<tr class="environment" data-environment="${h(e.application.name)}/${h(e.name)}">
        <td><a href="${envPath(e.application.name, e.name)}">${h(e.application.name)}/${h(e.name)}</a> ${badge(e.kind, "kind-")}
          <div class="muted">${e.trackingBranch ? `branch ${h(e.trackingBranch)}` : e.trackingTag ? `tag ${h(e.trackingTag)}` : ""}</div></td>
        <td class="status">${badge(e.status)}</td><td>${badge(e.health)}</td><td>${badge(e.syncStatus)}</td><td>${badge(e.drift.verdict)}</td>
        <td>${short(e.commit)}</td><td>${e.expiresAt ? time(e.expiresAt) : "never"}</td>
        <td>${e.lastRun ? `<a href="${runPath(e.lastRun.id)}">${h(e.lastRun.kind.toLowerCase())}</a> ${badge(e.lastRun.status)} ${time(e.lastRun.finishedAt ?? e.lastRun.queuedAt)}` : "—"}</td>
      </tr>`,
      )
      .join("")}</tbody></table>${pager(connection, filter)}<p class="muted" id="environments-count">${connection.nodes.length} of ${connection.totalCount} environment(s)</p>`;
}

// --- An environment ---------------------------------------------------------------

const ENVIRONMENT = `query($app: String!, $env: String!) { environment(application: $app, name: $env) {
  id name kind status health syncStatus syncReasons commit trackingBranch trackingTag expiresAt driftMode updatedAt
  application { name } drift { verdict reasons since }
  runs(first: 50) { nodes { id kind status commit reason triggeredBy attempt queuedAt startedAt finishedAt durationMs
    stages { name status } } }
} }`;

const EVENTS = `query($app: String!, $env: String!, $after: String) { environment(application: $app, name: $env) {
  events(first: 100, after: $after) { pageInfo { hasNextPage endCursor } nodes { cursor type recordedAt actor } }
} }`;

const STATE_AT = `query($app: String!, $env: String!, $cursor: String!) { environment(application: $app, name: $env) {
  stateAt(cursor: $cursor) { status health syncStatus commit expiresAt drift { verdict reasons } lastRun { kind status } }
} }`;

async function environmentPage(app, name) {
  main.innerHTML = `<p class="crumbs"><a href="/">Environments</a> /</p><div id="environment" aria-busy="true"></div>
    <h2>Runs</h2><div id="runs"></div><h2>History</h2><div id="history"></div>`;
  let environment = null;
  let refresh = null;
  let lastCursor = null;
  const gen = generation;
  leave = () => clearTimeout(refresh);
  const load = async () => {
    const data = await api.request(ENVIRONMENT, { app, env: name });
    if (gen !== generation) return;
    if (!data.environment) throw new ApiError(`there is no environment ${app}/${name}`, "NOT_FOUND", 404);
    const first = !environment;
    environment = data.environment;
    drawEnvironment(environment);
    drawRuns(environment.runs.nodes);
    await loadHistory(app, name, gen);
    if (first && gen === generation) {
      // Each new event of the environment shows at once; those the history
      // already holds are not sent again.
      lastCursor = timeline.length ? timeline[timeline.length - 1].cursor : null;
      const stop = api.subscribe(
        "subscription($id: ID!, $after: String) { environmentEvents(environmentId: $id, after: $after) { cursor } }",
        () => ({ id: environment.id, after: lastCursor }),
        {
          next: (d) => {
            lastCursor = d.environmentEvents.cursor;
            clearTimeout(refresh);
            refresh = setTimeout(() => load().catch(fail), 300);
          },
        },
      );
      leave = () => {
        stop();
        clearTimeout(refresh);
      };
    }
  };
  const drawEnvironment = (e) => {
    const reason = denied(e.kind);
    const gone = e.status === "TORN_DOWN" ? "the environment is torn down" : null;
    const box = main.querySelector("#environment");
    box.removeAttribute("aria-busy");
    box.innerHTML = `<h1>${h(e.application.name)}/${h(e.name)} ${badge(e.kind, "kind-")}</h1>
      <dl class="facts">
        <dt>Status</dt><dd id="env-status">${badge(e.status)}</dd>
        <dt>Health</dt><dd>${badge(e.health)}</dd>
        <dt>Sync</dt><dd>${badge(e.syncStatus)} ${e.syncReasons.map((r) => `<span class="muted">${h(r)}</span>`).join("; ")}</dd>
        <dt>Drift</dt><dd>${badge(e.drift.verdict)} <span class="muted">(${h(e.driftMode.toLowerCase())})</span></dd>
        <dt>Tracks</dt><dd>${e.trackingBranch ? `branch <code>${h(e.trackingBranch)}</code>` : e.trackingTag ? `tag <code>${h(e.trackingTag)}</code>` : "—"}</dd>
        <dt>Commit</dt><dd id="env-commit">${short(e.commit)}</dd>
        <dt>Expires</dt><dd>${e.expiresAt ? time(e.expiresAt) : "never"}</dd>
      </dl>
      ${e.drift.reasons.length ? `<div class="drift" id="drift"><h3>Drift</h3><ul>${e.drift.reasons.map((r) => `<li>${h(r)}</li>`).join("")}</ul>
        ${actionButton("drift-setup", "Run setup", reason ?? gone)}</div>` : ""}
      <div class="actions">
        ${actionButton("deploy", "Deploy", reason ?? gone)}
        ${actionButton("setup", "Setup", reason ?? gone)}
        ${actionButton("teardown", "Teardown", reason ?? gone)}
        ${reason ?? gone ? `<p class="muted" id="actions-reason">${h(reason ?? gone)}</p>` : ""}
      </div>`;
    const on = (id, f) => box.querySelector(`#${id}`)?.addEventListener("click", f);
    on("deploy", () =>
      confirmAction(`Deploy ${e.application.name}/${e.name}`, [
        { name: "commit", label: "Commit (empty: the head of what it tracks)" },
        { name: "reason", label: "Reason" },
      ], "Deploy", (v) => api.request(`mutation($input: EnvironmentDeployInput!) { environmentDeploy(input: $input) { run { id } userErrors { field message code } } }`, { input: { environmentId: e.id, commit: v.commit || null, reason: v.reason || null } }).then((d) => d.environmentDeploy)),
    );
    const setup = (preset) => () =>
      confirmAction(`Set up ${e.application.name}/${e.name}`, [
        { name: "reason", label: "Reason (required)", value: preset },
        { name: "commit", label: "Commit (empty: what runs now)" },
      ], "Set up", (v) => api.request(`mutation($input: EnvironmentSetupInput!) { environmentSetup(input: $input) { run { id } userErrors { field message code } } }`, { input: { environmentId: e.id, reason: v.reason, commit: v.commit || null } }).then((d) => d.environmentSetup));
    on("setup", setup(""));
    on("drift-setup", setup(`drift: ${e.drift.reasons.join("; ")}`));
    on("teardown", () =>
      confirmAction(`Tear down ${e.application.name}/${e.name}? Everything it runs is removed.`, [{ name: "reason", label: "Reason" }], "Tear down", (v) =>
        api.request(`mutation($input: EnvironmentTeardownInput!) { environmentTeardown(input: $input) { run { id } userErrors { field message code } } }`, { input: { environmentId: e.id, reason: v.reason || null } }).then((d) => d.environmentTeardown),
      ),
    );
  };
  const drawRuns = (runs) => {
    main.querySelector("#runs").innerHTML = runs.length
      ? `<table class="runs"><thead><tr><th>Run</th><th>Status</th><th>Stages</th><th>Commit</th><th>Who, why</th><th>Queued</th><th>Duration</th></tr></thead><tbody>${runs
          .map(
            (r) => `<tr class="run"><td><a href="${runPath(r.id)}">${h(r.kind.toLowerCase())}</a>${r.attempt > 1 ? ` <span class="muted">attempt ${r.attempt}</span>` : ""}</td>
            <td>${badge(r.status)}</td><td class="stages">${r.stages.map((s) => `<span class="stage ${h(s.status.toLowerCase())}" title="${h(s.name)}: ${h(s.status.toLowerCase())}">${h(s.name)}</span>`).join("")}</td>
            <td>${short(r.commit)}</td><td>${h(r.triggeredBy ?? "")} <span class="muted">${h(r.reason)}</span></td><td>${time(r.queuedAt)}</td><td>${duration(r.durationMs)}</td></tr>`,
          )
          .join("")}</tbody></table>`
      : `<p class="empty">No runs yet.</p>`;
  };
  await load();
}

let timeline = [];
async function loadHistory(app, name, gen) {
  const events = [];
  let after = null;
  for (let page = 0; page < 20; page++) {
    const data = await api.request(EVENTS, { app, env: name, after });
    if (gen !== generation) return;
    const c = data.environment.events;
    events.push(...c.nodes);
    if (!c.pageInfo.hasNextPage) break;
    after = c.pageInfo.endCursor;
  }
  const box = main.querySelector("#history");
  const kept = box.querySelector("#time-travel")?.value;
  const atEnd = !timeline.length || Number(kept) === timeline.length - 1;
  timeline = events;
  if (!events.length) {
    box.innerHTML = `<p class="empty">No events.</p>`;
    return;
  }
  const index = atEnd ? events.length - 1 : Number(kept);
  box.innerHTML = `<label for="time-travel">As it was after event</label>
    <input type="range" id="time-travel" min="0" max="${events.length - 1}" value="${index}">
    <div id="state-at" class="state-at"></div>
    <ol class="events">${events.map((ev, i) => `<li data-index="${i}"><code>${h(ev.type)}</code> ${time(ev.recordedAt)} <span class="muted">${h(ev.actor ?? "")}</span></li>`).join("")}</ol>`;
  const slider = box.querySelector("#time-travel");
  const show = async () => {
    const i = Number(slider.value);
    box.querySelectorAll(".events li").forEach((li) => li.classList.toggle("current", Number(li.dataset.index) === i));
    const ev = timeline[i];
    const data = await api.request(STATE_AT, { app, env: name, cursor: ev.cursor });
    if (gen !== generation) return;
    const s = data.environment.stateAt;
    box.querySelector("#state-at").innerHTML = s
      ? `<p>After <code>${h(ev.type)}</code> (${time(ev.recordedAt)}): ${badge(s.status)} ${badge(s.health)} ${badge(s.syncStatus)} ${badge(s.drift.verdict)}
          commit ${short(s.commit)}${s.lastRun ? `, last run ${h(s.lastRun.kind.toLowerCase())} ${badge(s.lastRun.status)}` : ""}</p>`
      : `<p>It did not exist yet.</p>`;
  };
  slider.addEventListener("input", () => show().catch(fail));
  await show();
}

/** A confirmation dialog with fields; `submit(values)` returns a payload with `run` and `userErrors`. */
function confirmAction(title, fields, verb, submit) {
  const dialog = document.createElement("dialog");
  dialog.id = "confirm";
  dialog.innerHTML = `<form method="dialog"><h2>${h(title)}</h2>
    ${fields.map((f) => `<label for="field-${f.name}">${h(f.label)}</label><input id="field-${f.name}" name="${f.name}" value="${h(f.value ?? "")}" autocomplete="off"><p class="field-error" id="error-${f.name}"></p>`).join("")}
    <p class="field-error" id="error-form" role="alert"></p>
    <div class="buttons"><button type="button" value="cancel" id="confirm-cancel">Cancel</button><button type="submit" id="confirm-ok" class="primary">${h(verb)}</button></div></form>`;
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.querySelector("#confirm-cancel").addEventListener("click", () => dialog.close());
  dialog.querySelector("form").addEventListener("submit", async (e) => {
    e.preventDefault();
    dialog.querySelectorAll(".field-error").forEach((p) => (p.textContent = ""));
    const values = Object.fromEntries(new FormData(e.target));
    try {
      const payload = await submit(values);
      if (payload.userErrors.length) {
        for (const err of payload.userErrors) {
          const field = err.field?.[err.field.length - 1];
          const slot = dialog.querySelector(`#error-${field}`) ?? dialog.querySelector("#error-form");
          slot.textContent += `${err.message} `;
        }
        return;
      }
      dialog.close();
      if (payload.run) navigate(runPath(payload.run.id));
    } catch (error) {
      dialog.querySelector("#error-form").textContent = error.message;
    }
  });
  dialog.showModal();
}

// --- A run --------------------------------------------------------------------

const RUN_FIELDS = `id kind status commit reason triggeredBy attempt error queuedAt startedAt finishedAt durationMs
  environment { id name kind application { name } }
  stages { name status durationMs jobs { name status durationMs exitCode error } }`;

async function runPage(id) {
  const gen = generation;
  const data = await api.request(`query($id: ID!) { node(id: $id) { ... on Run { ${RUN_FIELDS} } } }`, { id });
  if (gen !== generation) return;
  if (!data.node) throw new ApiError(`there is no run ${id}`, "NOT_FOUND", 404);
  let run = data.node;
  main.innerHTML = `<div id="run"></div><div id="terminal"></div>`;
  const draw = () => {
    const e = run.environment;
    const reason = denied(e.kind);
    main.querySelector("#run").innerHTML = `<p class="crumbs"><a href="/">Environments</a> / <a href="${envPath(e.application.name, e.name)}">${h(e.application.name)}/${h(e.name)}</a> /</p>
      <h1>${h(run.kind.toLowerCase())} <span id="run-status">${badge(run.status)}</span></h1>
      <p>${short(run.commit)} · ${h(run.triggeredBy ?? "")}: ${h(run.reason)} · <span id="run-attempt">attempt ${run.attempt}</span> · queued ${time(run.queuedAt)} · ${duration(run.durationMs)}</p>
      ${run.error ? `<p class="run-error" role="alert">${h(run.error)}</p>` : ""}
      <ol class="pipeline">${run.stages
        .map(
          (s) => `<li class="stage ${h(s.status.toLowerCase())}"><strong>${h(s.name)}</strong> ${badge(s.status)} <span class="muted">${duration(s.durationMs)}</span>
          <ul>${s.jobs.map((j) => `<li class="job ${h(j.status.toLowerCase())}">${h(j.name)} ${badge(j.status)} <span class="muted">${duration(j.durationMs)}</span>${j.exitCode !== null ? ` exit ${j.exitCode}` : ""}${j.error ? ` <span class="run-error">${h(j.error)}</span>` : ""}</li>`).join("")}</ul></li>`,
        )
        .join("")}</ol>
      <div class="actions">
        ${actionButton("retry", "Retry", reason ?? (run.status === "FAILED" ? null : "only a failed run can be retried"))}
        ${actionButton("cancel", "Cancel", reason ?? (run.status === "QUEUED" || run.status === "RUNNING" ? null : "the run has ended"))}
      </div>`;
    const box = main.querySelector("#run");
    box.querySelector("#retry").addEventListener("click", () =>
      confirmAction("Retry this run from its failed stage?", [], "Retry", (v) => api.request(`mutation($input: RunRetryInput!) { runRetry(input: $input) { run { id } userErrors { field message code } } }`, { input: { runId: run.id } }).then((d) => d.runRetry)),
    );
    box.querySelector("#cancel").addEventListener("click", () =>
      confirmAction("Cancel this run? A running job is stopped.", [{ name: "reason", label: "Reason" }], "Cancel run", (v) =>
        api.request(`mutation($input: RunCancelInput!) { runCancel(input: $input) { run { id } userErrors { field message code } } }`, { input: { runId: run.id, reason: v.reason || null } }).then((d) => ({ ...d.runCancel, run: null })),
      ),
    );
  };
  draw();
  const view = new LogView(main.querySelector("#terminal"));
  window.shiplogLog = view;
  let cursor = null;
  const stops = [
    api.subscribe(`subscription($id: ID!) { runUpdated(runId: $id) { ${RUN_FIELDS} } }`, () => ({ id }), {
      next: (d) => {
        run = d.runUpdated;
        draw();
      },
    }),
    // Resumes from the last line's cursor after a dropped connection: no line lost, none twice.
    api.subscribe("subscription($id: ID!, $after: String) { runLogChunks(runId: $id, after: $after) { cursor number text } }", () => ({ id, after: cursor }), {
      next: (d) => {
        const lines = d.runLogChunks;
        if (lines.length) cursor = lines[lines.length - 1].cursor;
        view.append(lines);
      },
      complete: async () => {
        if (gen !== generation) return;
        main.querySelector("#log").dataset.complete = "true";
        // The log ends when the run has ended: its final state, asked at once.
        // The answer comes from a read model that may trail `runUpdated`: only an
        // ended state replaces one still running, never the other way round.
        const final = await api.request(`query($id: ID!) { node(id: $id) { ... on Run { ${RUN_FIELDS} } } }`, { id });
        const active = (r) => ["QUEUED", "RUNNING"].includes(r.status);
        if (gen === generation && final.node && active(run) && !active(final.node)) {
          run = final.node;
          draw();
        }
      },
      error: fail,
    }),
  ];
  const line = () => /^#L(\d+)$/.exec(location.hash);
  if (line()) view.goTo(Number(line()[1]));
  const onHash = () => line() && view.goTo(Number(line()[1]));
  window.addEventListener("hashchange", onHash);
  leave = () => {
    stops.forEach((s) => s());
    window.removeEventListener("hashchange", onHash);
  };
}

// --- Routing ------------------------------------------------------------------

function navigate(path) {
  history.pushState(null, "", path);
  route();
}

async function route() {
  generation++;
  leave();
  leave = () => {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return signInPage();
  if (!api) api = new Api(token);
  // What a person cannot reach but a test may: the connection, to drop it.
  window.shiplogConsole = { api };
  try {
    if (!viewer) viewer = (await api.request("{ viewer { name role production } }")).viewer;
    header();
    const path = location.pathname;
    let m;
    if ((m = /^\/environments\/([^/]+)\/([^/]+)$/.exec(path))) await environmentPage(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    else if ((m = /^\/runs\/([^/]+)$/.exec(path))) await runPage(decodeURIComponent(m[1]));
    else await listPage();
    document.title = `shiplog · ${main.querySelector("h1")?.textContent.trim() ?? "console"}`;
  } catch (error) {
    fail(error);
  }
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[href^='/']");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
route();
