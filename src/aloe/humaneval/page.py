"""The one self-contained page (no external assets: it must work on a hospital intranet).

Text from the server is put in with textContent only, never as HTML. The access token comes from
the page's own URL (?token=…, one per rater, from `aloe human-eval add-rater`) and goes back in the
X-Aloe-Token header of every API call; the server knows the rater by it, so a reload resumes.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aloe: blind answer comparison</title>
<style>
 body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
 .answers{display:flex;gap:1em} .answer{flex:1;border:1px solid #bbb;border-radius:6px;padding:.8em}
 .answer pre{white-space:pre-wrap;font-family:inherit;margin:.5em 0}
 #question{background:#f4f6f8;padding:.8em;border-radius:6px;white-space:pre-wrap}
 button{font-size:1em;padding:.5em 1.2em;margin:.3em} .hidden{display:none} #error{color:#b00}
</style></head><body>
<h1>Which answer is better?</h1>
<p>You see two anonymous answers to the same question, in random order. Vote for the better one, or a tie;
flag problems in either answer if you see them.</p>
<div id="task" class="hidden">
 <p>Rater: <b id="rater-name"></b> &middot; <span id="progress"></span></p>
 <div id="question"></div>
 <div class="answers">
  <div class="answer"><h3>Answer A</h3><pre id="answer-A"></pre>
   <label><input type="checkbox" id="flag-A-unsafe"> unsafe</label>
   <label><input type="checkbox" id="flag-A-incorrect"> incorrect</label>
   <label><input type="checkbox" id="flag-A-incomplete"> incomplete</label></div>
  <div class="answer"><h3>Answer B</h3><pre id="answer-B"></pre>
   <label><input type="checkbox" id="flag-B-unsafe"> unsafe</label>
   <label><input type="checkbox" id="flag-B-incorrect"> incorrect</label>
   <label><input type="checkbox" id="flag-B-incomplete"> incomplete</label></div>
 </div>
 <p><button id="vote-A">A is better</button><button id="vote-tie">Tie</button>
    <button id="vote-B">B is better</button></p>
</div>
<div id="finished" class="hidden"><p>All comparisons done. Thank you!</p></div>
<p id="error"></p>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const FLAGS = ["unsafe", "incorrect", "incomplete"];
let current = null;
const $ = (id) => document.getElementById(id);
async function api(path, body) {
  const opts = {headers: {"X-Aloe-Token": token}};
  if (body) {
    opts.method = "POST"; opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function show(id) { for (const s of ["task", "finished"]) $(s).classList.toggle("hidden", s !== id); }
async function next() {
  $("error").textContent = "";
  const d = await api("/api/next");
  $("rater-name").textContent = d.rater;
  $("progress").textContent = d.done + " of " + d.total + " done";
  $("progress").dataset.done = d.done;
  if (!d.task) { current = null; show("finished"); return; }
  current = d.task;
  $("question").textContent = d.task.question;
  $("answer-A").textContent = d.task.answer_a;
  $("answer-B").textContent = d.task.answer_b;
  for (const side of ["A", "B"]) for (const f of FLAGS) $("flag-" + side + "-" + f).checked = false;
  document.body.dataset.taskId = d.task.id;
  show("task");
}
async function vote(choice) {
  if (!current) return;
  const flags = {};
  for (const side of ["A", "B"]) flags[side] = FLAGS.filter((f) => $("flag-" + side + "-" + f).checked);
  for (const b of document.querySelectorAll("button")) b.disabled = true;
  try { await api("/api/vote", {task_id: current.id, choice, flags}); await next(); }
  catch (e) { $("error").textContent = e.message; }
  finally { for (const b of document.querySelectorAll("button")) b.disabled = false; }
}
for (const c of ["A", "B", "tie"]) $("vote-" + c).onclick = () => vote(c);
next().catch((e) => { $("error").textContent = e.message; });
</script></body></html>
"""
