// BLAKE3 in plain JavaScript (hash mode only, 32-byte output), so the
// browser can name each 64 KiB chunk of an image by the same hash the
// server uses (blake3), build the upload's manifest, and send only the
// chunks the server lacks. Follows the reference implementation's
// structure: chunk states of 1 KiB, a stack of chaining values merged
// whenever the number of finished chunks is even. The compression
// function keeps its state in locals and reads message words straight
// from a little-endian view of the input (every browser is little-endian
// where it matters; other inputs are copied first).
'use strict';

(function (global) {
  const IV = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
  const CHUNK_START = 1;
  const CHUNK_END = 2;
  const PARENT = 4;
  const ROOT = 8;
  const CHUNK_LEN = 1024;
  const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

  // The message word schedule of the 7 rounds.
  const SCHEDULE = new Uint8Array(7 * 16);
  (function () {
    let p = [];
    for (let i = 0; i < 16; i++) p.push(i);
    for (let r = 0; r < 7; r++) {
      for (let i = 0; i < 16; i++) SCHEDULE[r * 16 + i] = p[i];
      p = PERM.map(function (j) { return p[j]; });
    }
  })();

  // Compresses the block of 16 words at m[mo..mo+16] with the chaining
  // value cv[co..co+8]; writes the new chaining value to out[oo..oo+8].
  function compress(cv, co, m, mo, counter, blockLen, flags, out, oo) {
    let s0 = cv[co], s1 = cv[co + 1], s2 = cv[co + 2], s3 = cv[co + 3];
    let s4 = cv[co + 4], s5 = cv[co + 5], s6 = cv[co + 6], s7 = cv[co + 7];
    let s8 = 0x6a09e667, s9 = 0xbb67ae85, s10 = 0x3c6ef372, s11 = 0xa54ff53a;
    let s12 = counter | 0, s13 = Math.floor(counter / 4294967296) | 0, s14 = blockLen | 0, s15 = flags | 0;
    for (let r = 0; r < 7; r++) {
      const k = r * 16;
      let x, y;
      // Columns.
      x = m[mo + SCHEDULE[k]]; y = m[mo + SCHEDULE[k + 1]];
      s0 = (s0 + s4 + x) | 0; s12 ^= s0; s12 = (s12 >>> 16) | (s12 << 16);
      s8 = (s8 + s12) | 0; s4 ^= s8; s4 = (s4 >>> 12) | (s4 << 20);
      s0 = (s0 + s4 + y) | 0; s12 ^= s0; s12 = (s12 >>> 8) | (s12 << 24);
      s8 = (s8 + s12) | 0; s4 ^= s8; s4 = (s4 >>> 7) | (s4 << 25);
      x = m[mo + SCHEDULE[k + 2]]; y = m[mo + SCHEDULE[k + 3]];
      s1 = (s1 + s5 + x) | 0; s13 ^= s1; s13 = (s13 >>> 16) | (s13 << 16);
      s9 = (s9 + s13) | 0; s5 ^= s9; s5 = (s5 >>> 12) | (s5 << 20);
      s1 = (s1 + s5 + y) | 0; s13 ^= s1; s13 = (s13 >>> 8) | (s13 << 24);
      s9 = (s9 + s13) | 0; s5 ^= s9; s5 = (s5 >>> 7) | (s5 << 25);
      x = m[mo + SCHEDULE[k + 4]]; y = m[mo + SCHEDULE[k + 5]];
      s2 = (s2 + s6 + x) | 0; s14 ^= s2; s14 = (s14 >>> 16) | (s14 << 16);
      s10 = (s10 + s14) | 0; s6 ^= s10; s6 = (s6 >>> 12) | (s6 << 20);
      s2 = (s2 + s6 + y) | 0; s14 ^= s2; s14 = (s14 >>> 8) | (s14 << 24);
      s10 = (s10 + s14) | 0; s6 ^= s10; s6 = (s6 >>> 7) | (s6 << 25);
      x = m[mo + SCHEDULE[k + 6]]; y = m[mo + SCHEDULE[k + 7]];
      s3 = (s3 + s7 + x) | 0; s15 ^= s3; s15 = (s15 >>> 16) | (s15 << 16);
      s11 = (s11 + s15) | 0; s7 ^= s11; s7 = (s7 >>> 12) | (s7 << 20);
      s3 = (s3 + s7 + y) | 0; s15 ^= s3; s15 = (s15 >>> 8) | (s15 << 24);
      s11 = (s11 + s15) | 0; s7 ^= s11; s7 = (s7 >>> 7) | (s7 << 25);
      // Diagonals.
      x = m[mo + SCHEDULE[k + 8]]; y = m[mo + SCHEDULE[k + 9]];
      s0 = (s0 + s5 + x) | 0; s15 ^= s0; s15 = (s15 >>> 16) | (s15 << 16);
      s10 = (s10 + s15) | 0; s5 ^= s10; s5 = (s5 >>> 12) | (s5 << 20);
      s0 = (s0 + s5 + y) | 0; s15 ^= s0; s15 = (s15 >>> 8) | (s15 << 24);
      s10 = (s10 + s15) | 0; s5 ^= s10; s5 = (s5 >>> 7) | (s5 << 25);
      x = m[mo + SCHEDULE[k + 10]]; y = m[mo + SCHEDULE[k + 11]];
      s1 = (s1 + s6 + x) | 0; s12 ^= s1; s12 = (s12 >>> 16) | (s12 << 16);
      s11 = (s11 + s12) | 0; s6 ^= s11; s6 = (s6 >>> 12) | (s6 << 20);
      s1 = (s1 + s6 + y) | 0; s12 ^= s1; s12 = (s12 >>> 8) | (s12 << 24);
      s11 = (s11 + s12) | 0; s6 ^= s11; s6 = (s6 >>> 7) | (s6 << 25);
      x = m[mo + SCHEDULE[k + 12]]; y = m[mo + SCHEDULE[k + 13]];
      s2 = (s2 + s7 + x) | 0; s13 ^= s2; s13 = (s13 >>> 16) | (s13 << 16);
      s8 = (s8 + s13) | 0; s7 ^= s8; s7 = (s7 >>> 12) | (s7 << 20);
      s2 = (s2 + s7 + y) | 0; s13 ^= s2; s13 = (s13 >>> 8) | (s13 << 24);
      s8 = (s8 + s13) | 0; s7 ^= s8; s7 = (s7 >>> 7) | (s7 << 25);
      x = m[mo + SCHEDULE[k + 14]]; y = m[mo + SCHEDULE[k + 15]];
      s3 = (s3 + s4 + x) | 0; s14 ^= s3; s14 = (s14 >>> 16) | (s14 << 16);
      s9 = (s9 + s14) | 0; s4 ^= s9; s4 = (s4 >>> 12) | (s4 << 20);
      s3 = (s3 + s4 + y) | 0; s14 ^= s3; s14 = (s14 >>> 8) | (s14 << 24);
      s9 = (s9 + s14) | 0; s4 ^= s9; s4 = (s4 >>> 7) | (s4 << 25);
    }
    out[oo] = s0 ^ s8; out[oo + 1] = s1 ^ s9; out[oo + 2] = s2 ^ s10; out[oo + 3] = s3 ^ s11;
    out[oo + 4] = s4 ^ s12; out[oo + 5] = s5 ^ s13; out[oo + 6] = s6 ^ s14; out[oo + 7] = s7 ^ s15;
  }

  // The input as 32-bit words (zero padded to whole 64-byte blocks).
  function asWords(bytes) {
    const padded = Math.max(64, Math.ceil(bytes.length / 64) * 64);
    if (LITTLE && bytes.byteOffset % 4 === 0 && bytes.length === padded) {
      return new Uint32Array(bytes.buffer, bytes.byteOffset, padded / 4);
    }
    const copy = new Uint8Array(padded);
    copy.set(bytes);
    if (LITTLE) return new Uint32Array(copy.buffer);
    const w = new Uint32Array(padded / 4);
    for (let i = 0; i < padded; i++) w[i >> 2] |= copy[i] << (8 * (i & 3));
    return w;
  }

  // blake3(bytes) as 32 bytes. `bytes` is a Uint8Array.
  function hash(bytes) {
    const n = bytes.length;
    const w = asWords(bytes);
    const chunks = Math.max(1, Math.ceil(n / CHUNK_LEN));
    // The chaining-value stack (at most 54 deep for any input).
    const stack = new Uint32Array(64 * 8);
    let depth = 0;
    const cv = new Uint32Array(8);
    const pblock = new Uint32Array(16);
    // The pending output: chaining value, block, counter, length, flags.
    const ocv = new Uint32Array(8);
    let oblock = w, ooff = 0, ocounter = 0, olen = 0, oflags = 0;
    for (let i = 0; i < chunks; i++) {
      const start = i * CHUNK_LEN;
      const len = Math.min(CHUNK_LEN, n - start);
      const blocks = Math.max(1, Math.ceil(len / 64));
      cv.set(IV);
      for (let b = 0; b < blocks - 1; b++) {
        compress(cv, 0, w, (start + b * 64) >> 2, i, 64, b === 0 ? CHUNK_START : 0, cv, 0);
      }
      const lastOff = (start + (blocks - 1) * 64) >> 2;
      const lastLen = len - (blocks - 1) * 64;
      const lastFlags = (blocks === 1 ? CHUNK_START : 0) | CHUNK_END;
      if (i < chunks - 1) {
        compress(cv, 0, w, lastOff, i, lastLen, lastFlags, cv, 0);
        let total = i + 1;
        while ((total & 1) === 0) {
          depth--;
          pblock.set(stack.subarray(depth * 8, depth * 8 + 8), 0);
          pblock.set(cv, 8);
          compress(IV, 0, pblock, 0, 0, 64, PARENT, cv, 0);
          total >>= 1;
        }
        stack.set(cv, depth * 8);
        depth++;
      } else {
        ocv.set(cv);
        oblock = w; ooff = lastOff; ocounter = i; olen = lastLen; oflags = lastFlags;
      }
    }
    const block = new Uint32Array(16);
    while (depth > 0) {
      compress(ocv, 0, oblock, ooff, ocounter, olen, oflags, cv, 0);
      depth--;
      block.set(stack.subarray(depth * 8, depth * 8 + 8), 0);
      block.set(cv, 8);
      ocv.set(IV);
      oblock = block; ooff = 0; ocounter = 0; olen = 64; oflags = PARENT;
    }
    const root = new Uint32Array(8);
    compress(ocv, 0, oblock, ooff, 0, olen, oflags | ROOT, root, 0);
    const out = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      out[4 * i] = root[i] & 255;
      out[4 * i + 1] = (root[i] >>> 8) & 255;
      out[4 * i + 2] = (root[i] >>> 16) & 255;
      out[4 * i + 3] = (root[i] >>> 24) & 255;
    }
    return out;
  }

  function hex(bytes) {
    let h = '';
    for (let i = 0; i < bytes.length; i++) h += (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16);
    return h;
  }

  global.blake3 = { hash: hash, hex: hex };
})(typeof window !== 'undefined' ? window : globalThis);
