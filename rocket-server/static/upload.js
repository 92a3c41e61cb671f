// Uploads a new image version from the browser, resumably: hash the file
// in 64 KiB chunks (blake3.js; all-zero chunks are holes and never sent),
// send the manifest to start an upload session, then PUT only the chunks
// the server says it lacks, four at a time, and commit. The session id is
// kept in localStorage with the file's name, size and date, so after a
// refresh choosing the same file again asks the server what is still
// missing and sends only that.
'use strict';

(function () {
  const CHUNK = 65536;
  const READ = 64 * CHUNK; // read the file 4 MiB at a time
  const PARALLEL = 4;

  const form = document.getElementById('upload-form');
  if (!form) return;
  const image = form.dataset.image;
  const csrf = form.dataset.csrf;
  const input = document.getElementById('upload-file');
  const bar = document.getElementById('upload-progress');
  const status = document.getElementById('upload-status');
  const button = document.getElementById('upload-button');
  const key = 'baas-upload:' + image;

  function say(text) { status.textContent = text; }
  function progress(fraction) {
    const pct = Math.max(0, Math.min(100, Math.floor(fraction * 100)));
    bar.value = pct;
    bar.textContent = pct + '%';
    bar.setAttribute('aria-valuenow', String(pct));
  }
  function size(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    return (u === 0 ? n : n.toFixed(1)) + ' ' + units[u];
  }

  const saved = (function () {
    try { return JSON.parse(localStorage.getItem(key) || 'null'); } catch (e) { return null; }
  })();
  if (saved) {
    say('An upload of ' + saved.name + ' (' + size(saved.size) + ') was interrupted. Choose the same file to resume it.');
  }

  async function call(method, url, body) {
    const res = await fetch(url, {
      method: method,
      body: body,
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/octet-stream' },
    });
    let json = null;
    try { json = await res.json(); } catch (e) { json = null; }
    if (!res.ok || json === null) {
      const msg = json && json.error ? json.error.message : 'the server answered ' + res.status + ' (log in again?)';
      const err = new Error(msg);
      err.status = res.status;
      throw err;
    }
    return json;
  }

  function isZero(bytes) {
    const w = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2);
    for (let i = 0; i < w.length; i++) if (w[i] !== 0) return false;
    for (let i = w.length << 2; i < bytes.length; i++) if (bytes[i] !== 0) return false;
    return true;
  }

  // Hashes every chunk: an array of hex hashes, null for holes.
  async function hashFile(file) {
    const hashes = [];
    for (let off = 0; off < file.size; off += READ) {
      const buf = new Uint8Array(await file.slice(off, Math.min(file.size, off + READ)).arrayBuffer());
      for (let c = 0; c < buf.length; c += CHUNK) {
        const piece = buf.subarray(c, Math.min(buf.length, c + CHUNK));
        hashes.push(isZero(piece) ? null : window.blake3.hex(window.blake3.hash(piece)));
      }
      progress(Math.min(file.size, off + READ) / file.size);
      say('Hashing ' + file.name + ': ' + size(Math.min(file.size, off + READ)) + ' of ' + size(file.size));
    }
    return hashes;
  }

  // The manifest's canonical encoding (baas_core::content::Manifest::encode).
  function manifest(fileSize, hashes) {
    const parts = [];
    const head = new Uint8Array(20);
    head.set([0x42, 0x41, 0x41, 0x53, 0x4d, 0x46, 0x31, 0x00]);
    const dv = new DataView(head.buffer);
    dv.setUint32(8, CHUNK, true);
    dv.setUint32(12, fileSize % 4294967296, true);
    dv.setUint32(16, Math.floor(fileSize / 4294967296), true);
    parts.push(head);
    let i = 0;
    while (i < hashes.length) {
      const hole = hashes[i] === null;
      let j = i;
      while (j < hashes.length && (hashes[j] === null) === hole) j++;
      const run = new Uint8Array(5);
      run[0] = hole ? 0 : 1;
      new DataView(run.buffer).setUint32(1, j - i, true);
      parts.push(run);
      if (!hole) {
        const hs = new Uint8Array(32 * (j - i));
        for (let k = i; k < j; k++) {
          const h = hashes[k];
          for (let b = 0; b < 32; b++) hs[32 * (k - i) + b] = parseInt(h.substr(2 * b, 2), 16);
        }
        parts.push(hs);
      }
      i = j;
    }
    return new Blob(parts);
  }

  async function upload(file) {
    button.disabled = true;
    progress(0);
    const hashes = await hashFile(file);
    const where = new Map();
    hashes.forEach(function (h, i) { if (h !== null && !where.has(h)) where.set(h, i); });
    let session = null;
    let missing = null;
    if (saved && saved.name === file.name && saved.size === file.size && saved.modified === file.lastModified) {
      try {
        const r = await call('GET', '/ui/live/uploads/' + saved.upload);
        session = saved.upload;
        missing = r.missing;
        say('Resuming: ' + missing.length + ' chunks still to send.');
      } catch (e) {
        session = null;
      }
    }
    if (session === null) {
      const r = await call('POST', '/ui/live/images/' + image + '/uploads', manifest(file.size, hashes));
      session = r.upload_id;
      missing = r.missing;
      localStorage.setItem(key, JSON.stringify({
        upload: session, name: file.name, size: file.size, modified: file.lastModified,
      }));
    }
    const total = where.size;
    let done = total - missing.length;
    progress(total === 0 ? 1 : done / total);
    const queue = missing.slice();
    let broken = null;
    async function worker() {
      while (queue.length > 0 && broken === null) {
        const h = queue.shift();
        const i = where.get(h);
        const start = i * CHUNK;
        const bytes = new Uint8Array(await file.slice(start, Math.min(file.size, start + CHUNK)).arrayBuffer());
        const frame = new Uint8Array(bytes.length + 1);
        frame[0] = 0; // a raw frame; the server compresses it
        frame.set(bytes, 1);
        try {
          await call('PUT', '/ui/live/uploads/' + session + '/chunks/' + h, frame);
        } catch (e) {
          // Stop every worker: the first failure is what the user sees.
          if (broken === null) broken = e;
          return;
        }
        if (broken !== null) return;
        done++;
        progress(done / total);
        say('Sending ' + file.name + ': ' + done + ' of ' + total + ' chunks');
      }
    }
    const workers = [];
    for (let k = 0; k < PARALLEL; k++) workers.push(worker());
    await Promise.all(workers);
    if (broken !== null) throw broken;
    const v = await call('POST', '/ui/live/uploads/' + session + '/commit');
    localStorage.removeItem(key);
    progress(1);
    say('Uploaded version ' + v.version + ' (' + size(v.size) + ', ' + size(v.added_bytes) + ' new in the store).');
    const again = document.getElementById('upload-done');
    if (again) again.hidden = false;
    button.disabled = false;
  }

  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    const file = input.files && input.files[0];
    if (!file) { say('Choose a file first.'); return; }
    upload(file).catch(function (e) {
      say('Upload failed: ' + e.message + '. Choose the same file again to resume.');
      button.disabled = false;
    });
  });
})();
