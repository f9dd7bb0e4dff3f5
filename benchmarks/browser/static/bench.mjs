// Driven by keras_unet.benchmarks.browser.runner: window.kerasUnetBench.run(job) runs one
// model file on the prepared inputs and returns its raw outputs and the latencies measured
// here, in the page (performance.now(), warm-up runs excluded).
import { environment, openMediaPipe, openOnnx } from "/engines.mjs";

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function toBase64(view) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

async function timed(runs, warmup, once) {
  for (let i = 0; i < warmup; i++) await once();
  const latencies = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await once();
    latencies.push(performance.now() - start);
  }
  return latencies;
}

async function runOnnx(job) {
  const engine = await openOnnx(job.model, job.threads);
  try {
    const tensors = job.inputs.map((input) => {
      const bytes = fromBase64(input.data);
      const Array = engine.ArrayFor(input.dtype);
      return engine.tensor(new Array(bytes.buffer), input.dims, input.dtype);
    });
    const latencies = await timed(job.runs, job.warmup, () => engine.run(tensors[0]));
    const outputs = [];
    for (const tensor of tensors) {
      const out = await engine.run(tensor);
      outputs.push({ data: toBase64(out.data), dims: out.dims, dtype: out.dtype });
    }
    return { backend: engine.backend, threads: engine.threads, latencies_ms: latencies, outputs };
  } finally {
    engine.close();
  }
}

async function runMediaPipe(job) {
  const engine = await openMediaPipe(job.model);
  try {
    const images = job.images.map((image) => new ImageData(
      new Uint8ClampedArray(fromBase64(image.data).buffer), image.width, image.height));
    const latencies = await timed(job.runs, job.warmup, async () => engine.segment(images[0]));
    const outputs = images.map((image) => {
      const out = engine.segment(image);
      return { category: out.category ? toBase64(out.category) : null,
               confidence: out.confidence.map(toBase64), width: out.width, height: out.height };
    });
    return { backend: engine.backend, threads: engine.threads, latencies_ms: latencies, outputs,
             labels: engine.labels };
  } finally {
    engine.close();
  }
}

window.kerasUnetBench = {
  environment,
  async run(job) {
    try {
      return await (job.kind === "onnx" ? runOnnx(job) : runMediaPipe(job));
    } catch (error) {
      return { error: String(error && error.message ? error.message : error) };
    }
  },
};
document.getElementById("status").textContent = "ready";
