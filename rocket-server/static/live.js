// Keeps the dashboard and a job's page current: polls the server's JSON
// every few seconds and rewrites the parts that change with textContent
// (never innerHTML, so nothing a user typed can become markup).
'use strict';

(function () {
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function link(href, text) {
    const a = el('a', text);
    a.href = href;
    return a;
  }
  function bar(pct) {
    const p = el('progress', pct + '%');
    p.max = 100;
    p.value = pct;
    return p;
  }
  async function get(url) {
    const res = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error('status ' + res.status);
    return res.json();
  }
  function every(ms, f) {
    let stopped = false;
    async function tick() {
      if (stopped) return;
      try {
        if ((await f()) === false) stopped = true;
      } catch (e) {
        const note = document.getElementById('live-note');
        if (note) note.textContent = 'Live updates paused: ' + e.message;
      }
      if (!stopped) setTimeout(tick, ms);
    }
    setTimeout(tick, ms);
  }

  const machines = document.getElementById('machines-body');
  if (machines) {
    every(3000, async function () {
      const data = await get('/ui/live/dashboard');
      const rows = data.machines.map(function (m) {
        const tr = el('tr');
        tr.dataset.machine = m.id;
        const name = el('td');
        name.appendChild(link('/ui/machines/' + m.id, m.name));
        tr.appendChild(name);
        tr.appendChild(el('td', m.mac, 'mono'));
        const st = el('td');
        st.appendChild(el('span', m.status, 'status status-' + (m.offline ? 'offline' : m.state)));
        if (m.job) st.appendChild(bar(m.percent));
        tr.appendChild(st);
        const job = el('td');
        if (m.job) job.appendChild(link('/ui/jobs/' + m.job, m.job.slice(0, 8) + ' (' + m.job_state + ')'));
        else job.textContent = '—';
        tr.appendChild(job);
        tr.appendChild(el('td', m.owner || '—'));
        tr.appendChild(el('td', m.queued, 'num'));
        tr.appendChild(el('td', m.last_seen));
        return tr;
      });
      machines.replaceChildren.apply(machines, rows);
      const note = document.getElementById('live-note');
      if (note) note.textContent = 'Updated ' + new Date().toLocaleTimeString();
    });
  }

  const job = document.getElementById('job');
  if (job && job.dataset.final !== 'true') {
    const id = job.dataset.job;
    every(2000, async function () {
      const j = await get('/ui/live/jobs/' + id);
      document.getElementById('job-state').textContent = j.state;
      const p = document.getElementById('job-progress');
      p.value = j.percent;
      p.textContent = j.percent + '%';
      document.getElementById('job-phase').textContent = j.phase || '—';
      document.getElementById('job-done').textContent = j.done + ' of ' + j.total;
      document.getElementById('job-error').textContent = j.error || '';
      const timeline = document.getElementById('job-timeline');
      const log = document.getElementById('job-log');
      const tl = [];
      const lines = [];
      j.events.forEach(function (e) {
        if (e.kind === 'log') {
          lines.push(e.at + '  ' + e.message);
        } else {
          const li = el('li');
          li.appendChild(el('time', e.at));
          li.appendChild(document.createTextNode(' '));
          li.appendChild(el('strong', e.kind));
          li.appendChild(document.createTextNode(' ' + e.message));
          tl.push(li);
        }
      });
      timeline.replaceChildren.apply(timeline, tl);
      log.textContent = lines.join('\n');
      if (j.final) {
        const cancel = document.getElementById('cancel-form');
        if (cancel) cancel.hidden = true;
        return false;
      }
      return true;
    });
  }
})();
