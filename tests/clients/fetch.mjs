// Node 20's fetch through keyswap, configured only by `keyswap env`: Node 20 itself ignores
// HTTPS_PROXY, so the sandbox's code installs undici's EnvHttpProxyAgent, which reads HTTPS_PROXY /
// NO_PROXY (Node 24+ does the same by itself with NODE_USE_ENV_PROXY=1, which keyswap env also
// prints); NODE_EXTRA_CA_CERTS makes Node trust the bundle. Usage: node fetch.mjs URL NAME VALUE
import { EnvHttpProxyAgent, setGlobalDispatcher, fetch } from "undici";

setGlobalDispatcher(new EnvHttpProxyAgent());
const [url, name, value] = process.argv.slice(2);
const response = await fetch(url, { headers: { [name]: value } });
console.log(`${response.status} HTTP/1.1`);
console.log(await response.text());
