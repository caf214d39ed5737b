//! Test data. The `PDF_*` values are IBKR's published worked example (the TESTCONS walk
//! through in IBKR's 2018 OAuth note, carried in `shared/ibkr-oauth-and-websocket-facts.md`
//! §1.13.1). The `D_*` values are the derived sign-byte vector of §1.13.2. `SMALL_KEY_PEM`,
//! `EC_KEY_PEM` and `DH_1536_PEM` were made for these tests (openssl, and RFC 3526 group 5
//! with g = 2 wrapped as PKCS#3).

/// Published private signature key (PKCS#8).
pub(crate) const PDF_SIGNING_KEY_PEM: &str = r#"-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDDgozsh3e7rl59
JI+OPYXJyc0Vlftmm45tTxXQ6PlzYsQifuOAwfK0bc2HPvMlVH/sxYEUGR6H4K3D
9j//uFbm6dg1/4YFTg68tnoReUk6x/kz8gF/8WKB7cVysSQvhWPK+zGyDXq4w7J4
XMpV9gSfeuIqkXchCwvkTVbysGB6C7jwySeiTRL/XhQfNj6iGnLos60Uz7IuY0zu
vJGvJIdgLTnI61MCaz59DzXhk0ATyZR00hfgGvvjNxBNOUVvTh8wq18NWer207ch
e8iYXF0kHTEO8jabWv9k/6Ol+NBW2YnKD3WcEcda/sii+CAH+YmXVcoOdtCj9oJK
p96voUQrAgMBAAECggEAAYlOGDG8VCI7pdoasrBzE7HdRbUnA5hnVx6O+lRKWYjG
J8s9eG6NvLM8MTriaEGwu6iVqhXEcqbmVqrht923+RqPU2VNpU8GuJ7qeKauV6Lo
p2rYbiv0bTb0HUGdGi5/KUIuEsseUsNe7Kk2AdTsFmC91D3OZNkUX9fnvgJ6z5qy
c1SvZGbrUiJuOMzXFz7g0/YH31H1mK72PIpFp5rha1djWzi0Pc99v06HwURIJAy/
aB7aaB9oXWKf0xw94+PGyUUUbfFJ0n3mgx7PQcOEaebu0JsGLBb28AUbughjjD9A
9qcIjJUbdwWq6MYY1JZfvymVuEurAaCLozdEWb0f2QKBgQDyaAdzlZL1SCNv9Jg+
sBm8u1fkH1pRWtZ6iQZLE46H6nwvOL4ZMm2Va/6SK6Jn7vikLHrXhizOanJuvgKj
gYKiAknjX8NGgTfObgh8X92xGch6m9irLLJoPHSBfAegr1Aro/z8rJuqdcBzyiHz
7xofZZkr/B1WLE96A/g9tVxTLQKBgQDOeUeOuY8B2iYVY0EZQQ4Yriyk/n1fgz3T
JFc8OuKJiir6WnYRSueC5DBsI0ghDQLq4VCG8yAkIUk/w98lGDaGGw+c+Mn1mAvA
bTN7p/Rkv5h1EEJqkWL8EyVbQj3yMlKVXz0fJ05ShD7c1FwV4pasiY5yYy6UK1Lk
mr3DRhZrtwKBgAm9Jjd9lebm3A2ebRNvrckIWdKfc9h65s0LfkY75ekOAalABVsr
zH1JVnP27tJwJmsqIlFQYbJ1Ul2ioqaBCIeLwf4xlb3aaSyQ/SRKEbUQzR4n7r+J
zy0i6KdfHUtWX8kxEHPyV1q02mOMhmqve4QxZ8L9oQwaQaMsT6fjBm+NAoGAY4Ls
TAt+syPSqwg1Pdiu1JJNjg/hmQEF8RdYu/ydZjCjWhnzQY5aWilkdRnkD5nXyCBj
0UaoPQGV7heXGqe6z5OHSN5XZ/ip4UpAP97I2S3GatU1TWtYy6jmnj8k3/AFAVzv
dm5ZP0fhjEkFQL7+Y5XAg7ztnBftUaSKxOyora0CgYACDDuIJjJ7Xym49iIzJcs+
w4KSLpDdvXt5yVuJoOhMeLgsA0JQdqUbBrEo6tTzdDMeUWuEwqfC4la5myQojkzy
jZSFrnhk9ecBYxNwoDPDVL7/sviL3SEWu87gRfyIW9AtUZgr2iibyL9KXNcRc5D1
kaiQj1DbJ5XOsRycWvhhXQ==
-----END PRIVATE KEY-----"#;

/// Published public encryption key.
pub(crate) const PDF_ENCRYPTION_PUBLIC_KEY_PEM: &str = r#"-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqXXw7Xv7G7VQDBNiWrOd
oKj9RaBV/6Xorx0zJy8iqTh10YBoVpA04mGLQWnOPRi7XKmH4smfsmWb7zWbNEup
PtEttbpczNx8Q4akM9w6CGBBiKkVPhOFTaxg/8AAWFWpNCiSkFDnI9goh9AfMy3p
PkKxUIjlfDKnboMA7842uuIvGfVrkyEvQz5w46fl1J8l3Qm4V/3SBU4T9w+RBT50
gqZ5zr+8aev61gfgfMMX7XkQT8Rxn70ybIlyt+ICXfR2raFTExi4h0HjCC5jRmyH
ZW5eEft6FKXOw+6okzUVNr4k9gcoumBIMnpP5Y7Gy1Yj+aSkLp52Jtywz82pmF2o
yQIDAQAB
-----END PUBLIC KEY-----"#;

/// Published private encryption key (PKCS#8).
pub(crate) const PDF_ENCRYPTION_KEY_PEM: &str = r#"-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCpdfDte/sbtVAM
E2Jas52gqP1FoFX/peivHTMnLyKpOHXRgGhWkDTiYYtBac49GLtcqYfiyZ+yZZvv
NZs0S6k+0S21ulzM3HxDhqQz3DoIYEGIqRU+E4VNrGD/wABYVak0KJKQUOcj2CiH
0B8zLek+QrFQiOV8MqdugwDvzja64i8Z9WuTIS9DPnDjp+XUnyXdCbhX/dIFThP3
D5EFPnSCpnnOv7xp6/rWB+B8wxfteRBPxHGfvTJsiXK34gJd9HatoVMTGLiHQeMI
LmNGbIdlbl4R+3oUpc7D7qiTNRU2viT2Byi6YEgyek/ljsbLViP5pKQunnYm3LDP
zamYXajJAgMBAAECggEAfY4aBQsAISZ0eY3/KG6+UmQCy4yhSzn0rZI37UdaKgDg
Imo+ZCySUkytbbjkCpaBc4VUXe6/OOFZ6KFSLiwE6Lr5YBUFXu/Zzfo7PQVlpgET
bRrB122FLeiTMcpjNw+4vyF0fiLDLuagGQhVpYjVsMCfOalERoINVa8QiZzDJjDo
/MoNuIv3+SGKpVfwI+imQH0UFbeYRQ26fMZ7blDineajiTfTvR74pRZzfyGRlr5i
quc6Y6MkpvZnhoBziRUHmte59gM25hLh8cKdRJc8zPKIQcmEFi3CeCuV9O/I3o1L
tFl9qkvBA9i6vSK9S70de8zvNZ/wqxs4T1JvnHjHAQKBgQDzpkPY7ianRPaLonUk
z44uQczJ6ihhvIUxClX2nD49tblsmN5Gh2naQ70i5ZLPx6XkJ1P90kSLK7LPRpPR
rb4jHEBMK/MCtK+yNSr/pRXL1UpsIZPXqfhP37jANf0ujogccZUrwy6RbagvqYYl
lkA6O3604oPo6ZD5eAWxgzcP4QKBgQCyDPXRdCekbkZF22J1i2AiDptY7B/nEAJG
t/ouQhycONh7jVle30Me9pADfFkEFn5cyWt2nmCrNPMNg3kwjxmgYOpmNYL9rjRz
o+Hr4J+B5oiQJOqrUq9ZGdwXMEuy73qri3d8py0u+zhhrFav3IbtAFvlK/rNHzPx
HMAKRErV6QKBgQDJOP59sSmRKX5okfInRZdKEqO7+jwBg/2II94c/qrUsjmCO7oP
C5TbYuhYYrteCKe0BtryHG7pdVyGnOZF3DTUsGdVwVJAYNNd3VU2rrOSlQOSzCRa
j5B4/u6JJ82CXsqAmzm0W80g5CxruJkGf9Fphms9nnmMqSFHNt2U3iZiYQKBgHzf
8hfwq0z7unWMJEXkdovsSq/XC5j29WG77s86tu4qQEqHHEMZuu2gZ+jJ8XSYgg95
hNEwywPIox67MugHtSVyU3NT3IcnAsqICg9w/u4QTX8rJRr7ZtfK9z2cNbtNkm91
5VubtGja8PQv9qxosojOU6Urbz8lvzw/ucB5nTLhAoGBAJdt9TkorV1z8FFO9inS
OQPu8GFGqG312UFCbKVXsA8cRrN0QriIkubkXH+f6nlb4VenLcbtPj+WFfDeQthD
PpjnQ/N3Y2KtfIetZoFmFyJrfOrodzjCiPf/1aPqdjo84Ya9iTD9i9YsREgBJIF1
VJ3JYvFekdjTTrHbCC8k+Fdf
-----END PRIVATE KEY-----"#;

/// Published DH prime, decimal.
pub(crate) const PDF_P_DEC: &str = r#"2499069795396868918570667522700240793977503044757573309739511295208235722142409374769355127224061247185331175754834933081116942704085922426371922616224734517877507932845444435427361472794622906954243204553966538048642322502748752434836833792770420327689702787033548113597709455603525845922437020959633159795521598312937214010753372403288287995234355949554085984970380628620433157169801871345092444119302108190066842214303181782393500377742092358991533392627170810719083436638720434593598103623472209675865117123844905863879818397571216044466267016711529541950756765922049109742033765551045177937421879382945335924285"#;

/// Published DH generator, decimal (larger than the prime).
pub(crate) const PDF_G_DEC: &str = r#"20987177111196158644366843622345789285608866677846058262388416761283779644758807784668755785792948410551747724872422109659421471903405265108031859454328782621600226092159632991563737358469987305806274484811391639032843020172237818843190174302921872566141394330154841222190528859792032158789434556396592945071874891845382615101191695518809097477517288420096235237460819485746068277784085816072231788200368891178303122154313607460176772166332845852125160120267796594522794546036187528669075504174889390839605502026020485104344329151603365980900821301873348531910373702447838936174629657554031816697007791113193297648393"#;

/// Published client DH exponent `a`, decimal.
pub(crate) const PDF_A_SECRET_DEC: &str =
    r#"1435329019564828319111943272230435123117133842132517761382825"#;

/// Published consumer key.
pub(crate) const PDF_CONSUMER_KEY: &str = r#"TESTCONS"#;

/// Published access token.
pub(crate) const PDF_ACCESS_TOKEN: &str = r#"6f531f8fd316915af53f"#;

/// Published access token secret (base64 RSA ciphertext).
pub(crate) const PDF_ACCESS_TOKEN_SECRET: &str = r#"MtUTi9TxkzPUTS4UTMb64ALEIK4tAsrXg/fsUuyc6WmEj5lV5oHXRGGpc3zpNkRIDHeCm+iwQuvuDl7mxiLZihHDpIF4huU7flWloyTKN4JObe5TBKnzm2FQpOSUqrzho87dVSD1N1CDhHiV4suE3E1lMayYQKYsAOsIJcnI63ZZeIc0UyBtEE4cUhwgmgAE5Ag2atZx4CRk5mqFgxd1ayRQiHc+v+r+B9DCK8vLe9uT5KPbHDEN35XVt3RRiyUxtQQFc9qaYfJvY/ZCXqnp7DSUrUAOJKNy0frn7SRG3ME/HmhAZC/Q79Pr9qSGSjJIbFBlUQYGGhsNpkdDIjcGJA=="#;

/// Published decrypted secret, base64.
pub(crate) const PDF_SECRET_B64: &str = r#"R2bzBq10CLvaoZUM9PM3EBVV0PpCq5BIceL+V+NlsnI="#;

/// Published decrypted secret, hex (the prepend).
pub(crate) const PDF_PREPEND_HEX: &str =
    r#"4766f306ad7408bbdaa1950cf4f337101555d0fa42ab904871e2fe57e365b272"#;

/// Published `diffie_hellman_challenge` (A), 511 hex digits.
pub(crate) const PDF_CHALLENGE_HEX: &str = r#"adcc3e6d1a297418336fd90f41f0b1a1d9b025b35725f6803d6b13309bc3d0fcfdaeff17306bcafa5d0e91a66ad540254cacae28550e30145df9d7a3847bb7774b6c53a6f1e5c1aaed51fffb17807c8e2083d93ede25801b41a83dd9fcce5b3f8cff4200dff23ebf907c6eab820a35fc32133eb09c653d7ceebbadf14715a3c191a37a442d1063232ddbc7fbc1be855d62b7383e134175e33c19b9118d6e3213e599664187319b39960efc5eb7e9f0e891d3bc71fd7e0f13f0330c0edf8f67007e5bf327219569298bea3ebde9c772c2b9461f484ed956e888c7c545f11a05c02812ef07ea026d0bd69a0b2fe60d7c106e059515a088780ebd1143b0765bebb"#;

/// Published `diffie_hellman_response` (B), 511 hex digits.
pub(crate) const PDF_RESPONSE_HEX: &str = r#"51a8175da12f6952e935756321e0d3589cbd7c2535413deafe67ea4395da94af3ac589ec99d0680cbf29f475c56450fd66bc403080bedc8be1805408e461acd6ae0f00fbb3ee8e81927448edff8b011af0f72eeefb4d2bc1ae8099d1e62cb9d2963e84195c8dce1e43d0694d32be7651f108d9b973439da6690b8f9409ffcba6f5e588e05611d161edb09464babd10fa84310d62551775745cacb5bb5071f179181eda83aea6de7bdba997ed8820a52cf7c84d41605895bdddb44972f06726866cd30472a8f53c1d50ba4d92c79737a1f54ffba404b389ee8c14ed10821403476584137811acbfca733147db6b776af4261af7cf9ff3224a3043ec705af760e"#;

/// Published K, decimal.
pub(crate) const PDF_K_DEC: &str = r#"626246873119171668391652546098163743226969715011436647508995723503455605464586520977274661939181284912783513777475376751653312066065778813035601938925839063962977130285681861128917558036055166314200723585833452614598893039983793075173417203185616888702928896753159421025151511421427064833107655803821952405347345204825388132012718847875567410852531617823117596913976804875666041328718805468094660984420975714798594795590947008746401693222302341952432123212575873140979848617085540126903548680615276969599932198294378598970717025709353582298996279704857368567112347771385627866241600484929153836364971579931995994781"#;

/// K in hex (derived in the facts file from the published decimal).
pub(crate) const PDF_K_HEX: &str = r#"4f5f90218f4b2feb4e99896ed8c8757c76c5fadca39301d6daa155da2fa695ad5f8069a9b5049cd550b7a5de10b8cb685c5410435dc5ba8b2908a7a5925b2c850812c98ab1a57f2eef6869c28e4a623545f71f8eec4ea0d2e34b2e27309016c81a1eaa9e35ca90fe4cf19d310f9dce3748372d63468f6bd8e1135aacaeaec5d2e07d9ec92f63d47698679af7a2ba42356f6f2e70af35fa613c37a587fad8f6eee51895055228bb718250fe7b99368e6cb12fc305a3cd0837c1dc6d7ba20bdd751997e0855921db04e7f63e7ca8dc51b35268eba217bfca622df8f4e52fee0919bad228ca01c0681a09e3b8f8e881847d4f6c6c8f28e679a1d0a6cd61334fa9d"#;

/// Published live session token.
pub(crate) const PDF_LST_B64: &str = r#"YBWbLw+9RYP2nWrPQHxHZkBb1aM="#;

/// The published live session token as hex.
pub(crate) const PDF_LST_HEX: &str = r#"60159b2f0fbd4583f69d6acf407c4766405bd5a3"#;

/// Published `live_session_token_signature`.
pub(crate) const PDF_LST_SIGNATURE: &str = r#"543c55477d6cbb0e792d1e4f8111cec7305ba3f4"#;

/// URL of the published LST request.
pub(crate) const PDF_LST_REQUEST_URL: &str =
    r#"http://localhost:12345/tradingapi/v1/oauth/live_session_token"#;

/// Nonce of the published LST request.
pub(crate) const PDF_LST_REQUEST_NONCE: &str = r#"36f7d85e418f8bfe8561"#;

/// Timestamp of the published LST request.
pub(crate) const PDF_LST_REQUEST_TIMESTAMP: u64 = 1473793702;

/// Published LST request base string, prepend included.
pub(crate) const PDF_LST_REQUEST_BASE: &str = r#"4766f306ad7408bbdaa1950cf4f337101555d0fa42ab904871e2fe57e365b272POST&http%3A%2F%2Flocalhost%3A12345%2Ftradingapi%2Fv1%2Foauth%2Flive_session_token&diffie_hellman_challenge%3Dadcc3e6d1a297418336fd90f41f0b1a1d9b025b35725f6803d6b13309bc3d0fcfdaeff17306bcafa5d0e91a66ad540254cacae28550e30145df9d7a3847bb7774b6c53a6f1e5c1aaed51fffb17807c8e2083d93ede25801b41a83dd9fcce5b3f8cff4200dff23ebf907c6eab820a35fc32133eb09c653d7ceebbadf14715a3c191a37a442d1063232ddbc7fbc1be855d62b7383e134175e33c19b9118d6e3213e599664187319b39960efc5eb7e9f0e891d3bc71fd7e0f13f0330c0edf8f67007e5bf327219569298bea3ebde9c772c2b9461f484ed956e888c7c545f11a05c02812ef07ea026d0bd69a0b2fe60d7c106e059515a088780ebd1143b0765bebb%26oauth_consumer_key%3DTESTCONS%26oauth_nonce%3D36f7d85e418f8bfe8561%26oauth_signature_method%3DRSA-SHA256%26oauth_timestamp%3D1473793702%26oauth_token%3D6f531f8fd316915af53f"#;

/// Published RSA-SHA256 signature of that base string.
pub(crate) const PDF_LST_REQUEST_SIGNATURE: &str = r#"KzaCo+vE5k1T3aor2/th/IhS1gj1b81cLTPVZYtsHsMYoyn0xY2f7Gkxnc9i1ZgeM5JFdh5qz32GhDlArbhHodSRxKEGPJ2BqOGlEBsL1RymJYY0sujoMg+uw06Ti7pg7h6OWdYi+yskRxbstD4O1Z4ZZXn6s/gBrO60+V5ZQe7ENsgbg7pvHmzjREC4NSrWLA4MQIbJimzZJ04JChvrSRsTcopnRdj3OXg9ce2eGFgPW1cbCV4fNoBg51M8BHOxGB10yux9usRBfh6UdzCaTHSbskhxIrUGLYc04SMh0KNE99dxww2w5vnyGPk2QnnPyRTcNBAM5UjerB3CqFeBUw=="#;

/// Published request_token base string (no prepend).
pub(crate) const PDF_REQUEST_TOKEN_BASE: &str = r#"POST&http%3A%2F%2Flocalhost%3A12345%2Ftradingapi%2Fv1%2Foauth%2Frequest_token&oauth_callback%3Doob%26oauth_consumer_key%3DTESTCONS%26oauth_nonce%3Dfcbc9c08d69ac269f7f1%26oauth_signature_method%3DRSA-SHA256%26oauth_timestamp%3D1473793701"#;

/// Published RSA-SHA256 signature of that base string.
pub(crate) const PDF_REQUEST_TOKEN_SIGNATURE: &str = r#"nHpiG+/oGBtXtQPYOEc1PJKVUYCgFzbbUyQ1slb5GtvRVp+nfOKlm4eXt7P4DhNecsrg5gEc/AWHD+L7snXFmOWlj6c1XjcSCj1r8ERWHg/f8U43PwLkVHCarwgh3cVcH0KGioPpShefNcVvriAUxfBiScWKiB/1zmI1cs9yBHqoJS6pv4KlAGeLj3eXLmYphZGgJzLMLyj6X4UIT1RftHLKbqwmgfVMoBuDm5EDJDokN2VowepIMnkQBjiUJGWklUcgD8Jq9VHAgzTfdMsX33Nnfia+Z4ZcdJLUn2uUlNJX3FtWJeY02OImvXoQOZNXN6hiUH7q158Z/LOqWDyUAA=="#;

/// Published HMAC-SHA256 GET base string (`/marketdata/snapshot?conid=8314`).
pub(crate) const PDF_GET_BASE: &str = r#"GET&http%3A%2F%2Flocalhost%3A12345%2Ftradingapi%2Fv1%2Fmarketdata%2Fsnapshot&conid%3D8314%26oauth_consumer_key%3DTESTCONS%26oauth_nonce%3Daecef17086308940e861%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1473795686%26oauth_token%3D6f531f8fd316915af53f"#;

/// Published HMAC-SHA256 GET signature.
pub(crate) const PDF_GET_SIGNATURE: &str = r#"+BdIuZDNooYZAbO9RZUCTC5F/3HjFOb04Tu4crpi0v8="#;

/// The (different) LST of the published form POST.
pub(crate) const PDF_POST_LST_B64: &str = r#"hsSvwnDjYhhMj3Ub2wKmMCCenMQ="#;

/// Published form-urlencoded body.
pub(crate) const PDF_POST_BODY: &str = r#"CustomerOrderId=ibm1&ContractId=8314&Exchange=SMART&Quantity=100&Price=100&OrderType=Limit&TimeInForce=DAY&Side=BUY"#;

/// Published HMAC-SHA256 POST base string.
pub(crate) const PDF_POST_BASE: &str = r#"POST&http%3A%2F%2Flocalhost%3A12345%2Fptradingapi%2Fv1%2Faccounts%2FDU216409%2Forder_impact&ContractId%3D8314%26CustomerOrderId%3Dibm1%26Exchange%3DSMART%26OrderType%3DLimit%26Price%3D100%26Quantity%3D100%26Side%3DBUY%26TimeInForce%3DDAY%26oauth_consumer_key%3DTESTCONS%26oauth_nonce%3Dfafd0982f8db1e34287c%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1475766474%26oauth_token%3D6f531f8fd316915af53f"#;

/// Published HMAC-SHA256 POST signature.
pub(crate) const PDF_POST_SIGNATURE: &str = r#"PsRc/99DBX4AyZyWqHnUJrEhsf2tTn+UWg6gafI01us="#;

/// Published header form of that signature.
pub(crate) const PDF_POST_HEADER_SIGNATURE: &str =
    r#"oauth_signature="PsRc%2F99DBX4AyZyWqHnUJrEhsf2tTn%2BUWg6gafI01us%3D""#;

/// Derived vector (§1.13.2): p hex.
pub(crate) const D_P_HEX: &str = r#"ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f14374fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7edee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf0598da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb9ed529077096966d670c354e4abc9804f1746c08ca237327ffffffffffffffff"#;

/// Derived vector (§1.13.2): a secret hex.
pub(crate) const D_A_SECRET_HEX: &str =
    r#"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"#;

/// Derived vector (§1.13.2): b secret hex.
pub(crate) const D_B_SECRET_HEX: &str =
    r#"fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"#;

/// Derived vector (§1.13.2): challenge hex.
pub(crate) const D_CHALLENGE_HEX: &str = r#"9e433f209b5fbf9e8d6e1075b0c9969c4dc642060a79fd918ca5950d470e83c65d0498b5e206c9ed9f981c682d13075fbfa455edbea73f1ebe0497808dd1cfb1cae6e41e9747d4d77dc9930cafc4bde7047fc405cda9915a4ed41ca91abea86f80fe3cab01a02427a57ee668bbd1283ebb0907119b9540ebc6bae486f78994eb5220e72eb3bd01b9c6f4c0616d27ef420bc261f6da71067ed41b8746397084b50c965c713b71474058309120aef50bfbac2b2defc32de03ee55722dc4d95ea20"#;

/// Derived vector (§1.13.2): response hex.
pub(crate) const D_RESPONSE_HEX: &str = r#"b79cad07d862be5d614148cad94057ae2d03550dce9dab93a304fdab72c37a4b319abe5e243297d631caf80fed12dbb1454c1c1384444acb79bf29a9f9dfe5ab6f33ab5560ddf76d36611f0efa7185b47eea62b2af042766fdac9e6028dda70f27cf85e3b2ac2f3efa93eb89d5d28b83cae7c82e368329b1707afb63bd93b7debc3becb067914063ac40d58d015b002e984175178a8928839e945240c4072a1aa833517a2fcdfed98d3140443d9ef4e2ce9b038241a13cdc6d80b45aa47f4a6c"#;

/// Derived vector (§1.13.2): k hex.
pub(crate) const D_K_HEX: &str = r#"a623682c3360d529cb15f76c1c7655b8b32f968d1a0b632c9501f27d2b39ceb7f709cbb6bf13d1a4ec591ad36685a918d88a2da32335d972111b881fbb7f383df89c0d503ba52c01f41a1272f43a8f9f122c5a308e7c0930766beda1f5c30bf38cad46e3ccbfebfea3e1c4854fb3724225f0f0abfbdd813dbe03f8b9ac755c0e7144a5646e66bb04558c3139a2b9bb806290c955d73adac48410b6c5ed402ba73c52084862d3c6c09bbd57f008642c49a9e9e5a3f6d6790ac1e97e259d25569e"#;

/// Derived vector (§1.13.2): lst b64.
pub(crate) const D_LST_B64: &str = r#"PTK66fDf7yQzxevdbf0MBMAhcA8="#;

/// Derived vector (§1.13.2): lst wrong b64.
pub(crate) const D_LST_WRONG_B64: &str = r#"Grq9b6Vv5bx5yEyr0ZjO6gYG8rk="#;

/// Derived vector (§1.13.2): lst signature.
pub(crate) const D_LST_SIGNATURE: &str = r#"9f59176ab45ca94992b1e0130bfd1333b1de2064"#;

/// Derived vector (§1.13.2): snapshot params.
pub(crate) const D_SNAPSHOT_PARAMS: &str = r#"conids=265598,8314&fields=31,84,86&oauth_consumer_key=TESTCONS&oauth_nonce=abcdefgh12345678&oauth_signature_method=HMAC-SHA256&oauth_timestamp=1714489460&oauth_token=a1b2c3d4e5f6a7b8c9d0"#;

/// Derived vector (§1.13.2): snapshot base.
pub(crate) const D_SNAPSHOT_BASE: &str = r#"GET&https%3A%2F%2Fapi.ibkr.com%2Fv1%2Fapi%2Fiserver%2Fmarketdata%2Fsnapshot&conids%3D265598%2C8314%26fields%3D31%2C84%2C86%26oauth_consumer_key%3DTESTCONS%26oauth_nonce%3Dabcdefgh12345678%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1714489460%26oauth_token%3Da1b2c3d4e5f6a7b8c9d0"#;

/// Derived vector (§1.13.2): snapshot signature.
pub(crate) const D_SNAPSHOT_SIGNATURE: &str = r#"8y0B5D2VSz3T+QzB6wIy23SyzJ/GmzVr/Z0qHopMrhQ="#;

/// Derived vector (§1.13.2): snapshot authorization.
pub(crate) const D_SNAPSHOT_AUTHORIZATION: &str = r#"OAuth realm="limited_poa", oauth_consumer_key="TESTCONS", oauth_nonce="abcdefgh12345678", oauth_signature="8y0B5D2VSz3T%2BQzB6wIy23SyzJ%2FGmzVr%2FZ0qHopMrhQ%3D", oauth_signature_method="HMAC-SHA256", oauth_timestamp="1714489460", oauth_token="a1b2c3d4e5f6a7b8c9d0""#;

/// Derived vector (§1.13.2): ibind base.
pub(crate) const D_IBIND_BASE: &str = r#"GET&https%3A%2F%2Fapi.ibkr.com%2Fv1%2Fapi%2Fiserver%2Fmarketdata%2Fsnapshot&oauth_consumer_key%3DTESTCONS%26oauth_nonce%3Dabcdefgh12345678%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1714489460%26oauth_token%3Da1b2c3d4e5f6a7b8c9d0"#;

/// Derived vector (§1.13.2): ibind signature.
pub(crate) const D_IBIND_SIGNATURE: &str = r#"AViYs9IVrNV+wUi/yz2GBdqwayD2n6c7QdrwTEb5t3s="#;

/// Derived vector (§1.13.2): ssodh base.
pub(crate) const D_SSODH_BASE: &str = r#"POST&https%3A%2F%2Fapi.ibkr.com%2Fv1%2Fapi%2Fiserver%2Fauth%2Fssodh%2Finit&oauth_consumer_key%3DTESTCONS%26oauth_nonce%3Dzyxwvuts87654321%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1714489460%26oauth_token%3Da1b2c3d4e5f6a7b8c9d0"#;

/// Derived vector (§1.13.2): ssodh signature.
pub(crate) const D_SSODH_SIGNATURE: &str = r#"IRy5OHr2h7tDkMx6Dtv+Wh3JVQDcrXT3T6jCZwz/Cbk="#;

/// A throwaway 1024-bit RSA key (PKCS#8), too small for IBKR.
pub(crate) const SMALL_KEY_PEM: &str = r#"-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBAPN0vadwZX9k7Df8
yPEBeT1y10FYQHM/qgr4jRlqFO6SN8lloPTNcIEm2dxf0rF3BEvgzQJSXLy3XhcH
oT46ovV+06jFR/kLxQ+aq9lUBsYunRSLnK1yx/2lzr5cir4xCDDoTLwSAchptPeQ
JH4KMIWSqMuV8cNNhfVxm8+udERzAgMBAAECgYEA8KimEa55psUM/QtVV2gtgSDU
yDOFAmgcn1uznzvOFUdU/jEIOvYaEJFnKwFONT+Bb8B456KjKanZyMoyCmHMUxPK
Bp8QmVL4CYnzdQBO0rGpB/uZGLTxIIiQeEfQ7GgrBJ7aaGTP7PtuXQ0ihrn8jmBJ
p5rLKoa0BflaCcrWhQECQQD6LZ3ZcNMgP26SCVec6E3MgHRCQNSnZqV5SSXnjDsX
6c0z1qLF3d3b0AyEFJHTUzSw3kXXX3tVDYvE7JEnOLVJAkEA+R8UDZMFaHM+hUOc
AJJp90cTVrHxZZyQqMGHq2UcQe7bSd3zHMBkaHuta4jLagA/IMuQ6vHbZ7CR9aWO
7oq32wJBAK6m2ePK2BlTLyXUT83Cf02c/4yhJdQX3L1nS4byZu6y0ga2eLwZv6CN
Ba/PjF4zYD15btiEV91wr3qyjEMNW8ECQC3R74hHoFkDyV4Nf2YDiAX5Rq9Nb073
Kww+/Esj/7yIyECf2BVTtaQaC12Z/X/zp6jKiE8OSQKbUV1TJCTv0r0CQD9VazwN
pLXg1y6o83GxVyHdXTgsaxrJmU1AYTlwSCNNneGBvikayFt0y2BopMI7M3zJ0u8Q
GF82dyh5P9kS4a8=
-----END PRIVATE KEY-----"#;

/// A throwaway P-256 EC key (PKCS#8): valid PEM, not RSA.
pub(crate) const EC_KEY_PEM: &str = r#"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOD/lzfvIFaPFKAgC
yqYV3+dozF5cwPliqn94hsrrkTahRANCAAQIXBGOny3/hEbgj+6x6RLH8d+LjTlk
Xsffh2wgrY469WThRtvMfL2Jg9mUESY4F4BOkpJRFcrAxr1h5Ltor3T7
-----END PRIVATE KEY-----"#;

/// RFC 3526 group 5 with g = 2 as a PKCS#3 `DH PARAMETERS` block.
pub(crate) const DH_1536_PEM: &str = r#"-----BEGIN DH PARAMETERS-----
MIHHAoHBAP//////////yQ/aoiFowjTExmKLgNwc0SkCTgiKZ8x0Agu+pjsTmyJR
Sgh5jjQE3e+VGbPNOkMbMCsKbfJfFDdP4TVtbVHCReSFtXZiXn7G9ExC6aY37WsL
/1y29Aa37e44a/taiZ+lrp8kEXxLH+ZJKGZR7ORbPcIAfLihY78FmNpINhxV05pp
Fj+o/STPX4NlXSPco62WHGLzViCFUrue1SkHcJaWbWcMNU5KvJgE8XRsCMojcyf/
/////////wIBAg==
-----END DH PARAMETERS-----"#;
