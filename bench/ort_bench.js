// Times an ONNX model with onnxruntime-node (the engine FarmVibes runs), as the
// yardstick for `nimbus infer`. Benchmarks only: never a runtime dependency.
// Usage: node ort_bench.js MODEL.onnx INPUT.npy THREADS WARMUP REPEAT [OUTPUT.npy]
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(path) {
  const buf = fs.readFileSync(path);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const offset = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', offset, offset + headerLen);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(`${path}: expected float32`);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').map((s) => s.trim()).filter((s) => s).map(Number);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + offset + headerLen, buf.byteOffset + buf.length));
  return { shape, data };
}

function writeNpy(path, shape, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  fs.writeFileSync(path, Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

async function main() {
  const [model, input, threads, warmup, repeat, output] = process.argv.slice(2);
  const x = readNpy(input);
  const shape = x.shape.length === 3 ? [1, ...x.shape] : x.shape;
  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads), interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const prepareMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, shape) };
  let result;
  for (let k = 0; k < Number(warmup); k++) result = await session.run(feeds);
  const ms = [];
  for (let k = 0; k < Number(repeat); k++) {
    const start = process.hrtime.bigint();
    result = await session.run(feeds);
    ms.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  ms.sort((a, b) => a - b);
  if (output) {
    const out = result[session.outputNames[0]];
    writeNpy(output, out.dims, out.data);
  }
  console.log(JSON.stringify({ engine: 'onnxruntime', version: require('onnxruntime-node/package.json').version,
    prepare_ms: prepareMs, min_ms: ms[0], median_ms: ms[Math.floor(ms.length / 2)], runs: ms.length }));
}

main().catch((e) => { console.error(e.message); process.exit(1); });
