/*
 * Runs `jupyter-builder` (from the `jupyter_builder` Python package that JupyterLab installs)
 * with the given arguments. It is found on PATH, else next to the Python of an active or the
 * repository's virtual environment, so that `pip install --no-build-isolation` works from an
 * environment that was not activated.
 */
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const exe = process.platform === 'win32' ? 'jupyter-builder.exe' : 'jupyter-builder';
const bin = process.platform === 'win32' ? 'Scripts' : 'bin';
const candidates = [];
for (const dir of (process.env.PATH || '').split(path.delimiter)) {
  if (dir) {
    candidates.push(path.join(dir, exe));
  }
}
if (process.env.VIRTUAL_ENV) {
  candidates.push(path.join(process.env.VIRTUAL_ENV, bin, exe));
}
candidates.push(path.resolve(__dirname, '..', '..', '.venv', bin, exe));

const found = candidates.find(c => fs.existsSync(c));
if (!found) {
  console.error(
    'jupyter-builder was not found (on PATH, in $VIRTUAL_ENV or ../.venv). ' +
      'Install JupyterLab >= 4.6 (it brings jupyter_builder) in the Python environment ' +
      'that builds nbflow, or put that environment on PATH.'
  );
  process.exit(1);
}
const result = spawnSync(found, process.argv.slice(2), { stdio: 'inherit' });
process.exit(result.status === null ? 1 : result.status);
