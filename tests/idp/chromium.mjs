// What the Chromium end-to-end scripts share: a headless Debian Chromium driven by
// playwright-core, a list of failed checks, the pages' state when something throws, and one
// verdict line (exit 0 and `ok` when every check held).
import { chromium } from 'playwright-core';

/// Starts headless Chromium (CHROMIUM, default /usr/bin/chromium).
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

/// Runs `body(browser, check)`; a check that does not hold, or an exception (with where every
/// page was), fails the script; `ok` is printed when none did.
export async function run(ok, body) {
  const browser = await launch();
  const failures = [];
  const check = (holds, what) => { if (!holds) failures.push(what); };
  try {
    await body(browser, check);
  } catch (err) {
    failures.push(`error: ${err.message}`);
    for (const p of browser.contexts().flatMap((c) => c.pages())) {
      failures.push(`at ${p.url()}: ${(await p.content().catch(() => '')).slice(0, 600)}`);
    }
  } finally {
    await browser.close();
  }
  if (failures.length) {
    console.error(`${ok.replace(/ ok$/, '')} failed:\n- ${failures.join('\n- ')}`);
    process.exit(1);
  }
  console.log(ok);
}

/// Fills the test IdP's login form as `user` and waits until the browser is back under `gate`.
export async function signIn(page, gate, user) {
  await page.waitForSelector('#username', { timeout: 15000 });
  await page.fill('#username', user);
  await page.fill('#password', 'password');
  await Promise.all([page.waitForURL(`${gate}/**`, { timeout: 15000 }), page.click('#submit')]);
}
