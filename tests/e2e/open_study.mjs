// Open one study in OHIF as a person would, in headless Chromium driven by playwright-core:
// the study list first (it must show the patient), then the viewer. Prints one JSON line:
// the DICOMweb requests the viewer made, those that failed, and the browser's console errors;
// saves screenshots of the study list and of the first viewport.
//
// node open_study.mjs VIEWER_URL STUDY_UID PATIENT_NAME SCREENSHOT_DIR
import { chromium } from 'playwright-core';

const [viewerUrl, studyUid, patientName, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
  ],
});
const result = { requests: [], failures: [], console: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('response', (r) => {
    if (!r.url().includes('/aets/')) return;
    result.requests.push({ url: r.url(), status: r.status() });
    if (r.status() >= 400) result.failures.push({ url: r.url(), status: r.status() });
  });
  page.on('requestfailed', (r) => {
    if (r.url().includes('/aets/')) result.failures.push({ url: r.url(), error: r.failure()?.errorText });
  });
  page.on('console', (m) => { if (m.type() === 'error') result.console.push(m.text()); });

  await page.goto(`${viewerUrl}/`);
  await page.getByText(patientName, { exact: false }).first().waitFor({ timeout: 60_000 });
  await page.screenshot({ path: `${shots}/study-list.png` });

  const firstFrame = page.waitForResponse(
    (r) => r.url().includes('/frames/') && r.status() === 200, { timeout: 90_000 });
  await page.goto(`${viewerUrl}/viewer?StudyInstanceUIDs=${studyUid}`);
  await firstFrame;
  await page.waitForLoadState('networkidle', { timeout: 90_000 });
  const canvas = page.locator('canvas.cornerstone-canvas').first();
  await canvas.waitFor({ timeout: 30_000 });
  await canvas.screenshot({ path: `${shots}/viewport.png` });
  await page.screenshot({ path: `${shots}/viewer.png` });
} catch (error) {
  result.error = String(error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
