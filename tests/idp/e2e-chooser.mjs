// Sign-in through the provider chooser in a real headless Chromium (Debian's /usr/bin/chromium
// driven by playwright-core): a page of a route that accepts several providers shows the
// chooser; the user picks one, signs in at its form, lands back on the page as themselves.
// Env: GATE_URL, APP_PATH, CHOICE (the link text to pick), USER, USER_SUB (the X-User-Id the app
// must see), CHROMIUM. Exits 0 when every check holds; prints what failed otherwise.
import { chromium } from 'playwright-core';

const gate = process.env.GATE_URL;
const appPath = process.env.APP_PATH;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };
try {
  const page = await (await browser.newContext()).newPage();
  const response = await page.goto(`${gate}${appPath}`);
  check(response.status() === 200, `chooser status ${response.status()}`);
  const text = await page.locator('body').innerText();
  check(text.includes('Choose how to sign in'), `no chooser: ${text}`);
  check(text.includes(process.env.CHOICE) && text.includes('default'), `the choices: ${text}`);
  await page.getByRole('link', { name: process.env.CHOICE }).click();
  await page.waitForSelector('#username', { timeout: 15000 });
  await page.fill('#username', process.env.USER);
  await page.fill('#password', 'password');
  await Promise.all([page.waitForURL(`${gate}${appPath}`, { timeout: 15000 }), page.click('#submit')]);
  const echo = JSON.parse(await page.locator('body').innerText());
  const seen = echo.headers.filter(([k]) => k.toLowerCase() === 'x-user-id').map(([, v]) => v);
  check(JSON.stringify(seen) === JSON.stringify([process.env.USER_SUB]), `x-user-id ${seen}`);
  check(echo.path === appPath, `landed on ${echo.path}`);
} catch (err) {
  failures.push(`error: ${err.message}`);
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    failures.push(`at ${p.url()}: ${(await p.content().catch(() => '')).slice(0, 600)}`);
  }
} finally {
  await browser.close();
}
if (failures.length) {
  console.log(failures.join('\n'));
  process.exit(1);
}
console.log('chooser ok');
