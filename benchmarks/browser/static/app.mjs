// The page `keras-unet web MODEL` serves: an image dropped or picked (or the camera) is
// segmented with the exported file, in this page, and the mask is drawn over it with the
// latency of the model call. /config.json describes the model (written by the command from
// the file's metadata); every script and .wasm file comes from this server.
import { openMediaPipe, openOnnx, percentile } from "/engines.mjs";

const $ = (id) => document.getElementById(id);
const COLORS = [[0, 0, 0], [255, 64, 32], [32, 160, 255], [64, 200, 64], [220, 200, 0], [200, 64, 220]];
const latencies = [];
let engine = null;
let config = null;

function showError(error) {
  $("error").textContent = String(error && error.message ? error.message : error);
  document.body.dataset.state = "error";
}

// Model input from an image: resized to the model's size by the canvas, NHWC in [0, 255],
// luma for a 1-channel model, quantized for an integer input.
function onnxInput(source) {
  const [height, width] = config.input_size;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(source, 0, 0, width, height);
  const pixels = context.getImageData(0, 0, width, height).data;
  const channels = config.channels;
  const values = new Float32Array(width * height * channels);
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = [pixels[4 * i], pixels[4 * i + 1], pixels[4 * i + 2]];
    if (channels === 1) values[i] = 0.299 * r + 0.587 * g + 0.114 * b;
    else { values[3 * i] = r; values[3 * i + 1] = g; values[3 * i + 2] = b; }
  }
  const q = config.input_quantization;
  const ArrayType = engine.ArrayFor(config.input_dtype);
  const data = q ? ArrayType.from(values, (v) => Math.round(v / q.scale) + q.zero_point)
                 : (config.input_dtype === "float32" ? values : ArrayType.from(values, Math.round));
  return engine.tensor(data, [1, height, width, channels], config.input_dtype);
}

// Class index per pixel from the raw output: dequantize, activate logits, threshold/argmax.
function onnxMask(output) {
  const [, height, width] = output.dims;
  const classes = output.dims.length === 4 ? output.dims[3] : 1;
  const q = config.output_quantization;
  const value = (i) => (q ? (output.data[i] - q.zero_point) * q.scale : output.data[i]);
  const mask = new Uint8Array(height * width);
  for (let p = 0; p < height * width; p++) {
    if (classes === 1) {
      let v = value(p);
      if (config.output_activation === null) v = 1 / (1 + Math.exp(-v));
      mask[p] = v >= config.threshold ? 1 : 0;
    } else {
      let best = 0;
      for (let k = 1; k < classes; k++) if (value(p * classes + k) > value(p * classes + best)) best = k;
      mask[p] = best;
    }
  }
  return { mask, width, height };
}

async function segment(source) {
  let result;
  const start = performance.now();
  if (config.kind === "onnx") {
    const tensor = onnxInput(source);
    const t0 = performance.now();
    const output = await engine.run(tensor);
    latencies.push(performance.now() - t0);
    result = onnxMask(output);
  } else {
    const out = engine.segment(source);
    latencies.push(performance.now() - start);
    // Binary files: MediaPipe's category 0 is the one output class (the foreground).
    const binary = out.confidence.length === 1;
    const mask = binary ? out.category.map((c) => (c === 0 ? 1 : 0)) : out.category;
    result = { mask, width: out.width, height: out.height };
  }
  draw(source, result);
  window.kerasUnetApp.lastMask = Array.from(result.mask);
  window.kerasUnetApp.lastMaskShape = [result.height, result.width];
  const sorted = [...latencies].sort((a, b) => a - b);
  $("stats").textContent = `${engine.backend}, ${engine.threads} thread(s): last ` +
    `${latencies[latencies.length - 1].toFixed(2)} ms, p50 ${percentile(sorted, 0.5).toFixed(2)} ms ` +
    `over ${latencies.length} call(s); foreground ${(100 * result.mask.filter((c) => c > 0).length / result.mask.length).toFixed(1)}%`;
  document.body.dataset.state = "done";
}

function draw(source, { mask, width, height }) {
  const image = $("image");
  // A video's own size is videoWidth/videoHeight (its width attribute is the element's).
  const [sourceWidth, sourceHeight] = [source.videoWidth || source.width, source.videoHeight || source.height];
  const scale = Math.min(1, 640 / Math.max(sourceWidth, sourceHeight));
  // Small model-size images are shown enlarged, so the mask can be seen.
  const enlarge = Math.max(1, Math.floor(320 / Math.max(sourceWidth, sourceHeight, 1)));
  image.width = Math.round(sourceWidth * scale * enlarge);
  image.height = Math.round(sourceHeight * scale * enlarge);
  const context = image.getContext("2d");
  context.imageSmoothingEnabled = enlarge === 1;
  context.drawImage(source, 0, 0, image.width, image.height);
  const overlay = $("mask");
  overlay.width = width;
  overlay.height = height;
  const pixels = new ImageData(width, height);
  for (let p = 0; p < mask.length; p++) {
    const [r, g, b] = COLORS[mask[p] % COLORS.length];
    pixels.data.set([r, g, b, mask[p] > 0 ? 140 : 0], 4 * p);
  }
  overlay.getContext("2d").putImageData(pixels, 0, 0);
}

async function segmentFile(file) {
  try {
    document.body.dataset.state = "busy";
    await segment(await createImageBitmap(file));
  } catch (error) {
    showError(error);
  }
}

async function startCamera() {
  try {
    const video = $("video");
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
    await video.play();
    const frame = async () => {
      try {
        await segment(video);
        requestAnimationFrame(frame);
      } catch (error) {
        showError(`camera: ${error.message || error}`);  // stops the loop
      }
    };
    requestAnimationFrame(frame);
  } catch (error) {
    showError(`camera: ${error.message || error}`);
  }
}

window.kerasUnetApp = { lastMask: null, lastMaskShape: null };
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) segmentFile(event.dataTransfer.files[0]);
});
$("file").addEventListener("change", async (event) => {
  await segmentFile(event.target.files[0]);
  event.target.value = "";  // so that picking the same file again segments it again
});
$("camera").addEventListener("click", startCamera);

try {
  config = await (await fetch("/config.json")).json();
  engine = config.kind === "onnx" ? await openOnnx(config.model, config.threads)
                                   : await openMediaPipe(config.model);
  $("model").textContent = `${config.name}: ${config.description}, ${engine.backend}`;
  $("camera").disabled = !navigator.mediaDevices?.getUserMedia;
  document.body.dataset.state = "ready";
} catch (error) {
  showError(`${config ? config.name : "the model"}: ${error.message || error}`);
}
